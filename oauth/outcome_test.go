package oauth

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"testing"
)

// TestRefreshOutcome: a refresh whose request reached the server but got no
// answer is marked OutcomeUnknown and not retried (the caller's rotation
// policy decides); one that never left is retried as usual and is not
// marked.
func TestRefreshOutcome(t *testing.T) {
	t.Run("reset after the request was read", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		requests := make(chan struct{}, 10)
		go func() {
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				// Read the whole request, as a server that handled it
				// would, then drop the connection without answering.
				if _, err := http.ReadRequest(bufio.NewReader(conn)); err == nil {
					requests <- struct{}{}
				}
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
				conn.Close()
			}
		}()
		e, _ := newTestEndpoint(t, Config{TokenURL: "http://" + ln.Addr().String() + "/token", AuthStyle: AuthStyleParams,
			Retry: Backoff{MaxAttempts: 4}})
		_, err = e.Refresh(t.Context(), epRefresh1)
		oe := asError(t, err)
		if !oe.OutcomeUnknown || oe.Code != CodeNetwork || !errors.Is(err, ErrTransient) {
			t.Fatalf("err = %v (outcome unknown %v), want a network error of unknown outcome", err, oe.OutcomeUnknown)
		}
		if n := len(requests); n != 1 {
			t.Fatalf("the server received the refresh %d times, want 1: a refresh of unknown outcome is never replayed here", n)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		e, s := newTestEndpoint(t, Config{TokenURL: "http://" + addr + "/token", AuthStyle: AuthStyleParams,
			Retry: Backoff{MaxAttempts: 3}})
		_, err = e.Refresh(t.Context(), epRefresh1)
		oe := asError(t, err)
		if oe.OutcomeUnknown || oe.Code != CodeNetwork {
			t.Fatalf("err = %v (outcome unknown %v), want a network error known not to have reached the server", err, oe.OutcomeUnknown)
		}
		if n := len(s.recorded()); n != 2 {
			t.Fatalf("slept %d times, want 2: a request that never left is retried", n)
		}
	})
	t.Run("gateway timeout", func(t *testing.T) {
		p := newEPProvider(t, func(int, epRequest) epReply { return epJSON(504, `{"error":"gateway_timeout"}`) })
		e, _ := newTestEndpoint(t, Config{TokenURL: p.url("/token"), AuthStyle: AuthStyleParams, Retry: Backoff{MaxAttempts: 4}})
		_, err := e.Refresh(t.Context(), epRefresh1)
		if oe := asError(t, err); !oe.OutcomeUnknown || len(p.requests()) != 1 {
			t.Fatalf("504: outcome unknown %v after %d requests, want unknown after 1", oe.OutcomeUnknown, len(p.requests()))
		}
	})
	t.Run("client credentials are asked again", func(t *testing.T) {
		p := newEPProvider(t, func(n int, _ epRequest) epReply {
			if n == 0 {
				return epJSON(502, `{"error":"bad_gateway"}`)
			}
			return epJSON(200, epTokenBody)
		})
		e, _ := newTestEndpoint(t, Config{TokenURL: p.url("/token"), AuthStyle: AuthStyleParams, Retry: Backoff{MaxAttempts: 2}})
		if _, err := e.ClientCredentials(t.Context()); err != nil || len(p.requests()) != 2 {
			t.Fatalf("client credentials after a 502: %v after %d requests; asking again is always safe", err, len(p.requests()))
		}
	})
}
