package client

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/oauth"
)

// BenchmarkTransport measures one request with a valid token against a
// local keep-alive upstream, through http.Client with the same base
// transport: bare (no token) is the floor; bare-header is a bare client
// whose caller sets the same Authorization header itself (the cost of the
// header on the wire and in the server, with no token logic); oauth2 is
// x/oauth2's NewClient (ReuseTokenSource + Transport); tokenbroker is this
// package.
func BenchmarkTransport(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	base := http.DefaultTransport.(*http.Transport).Clone()
	defer base.CloseIdleConnections()

	exp := time.Now().Add(24 * time.Hour)
	ts, err := NewTokenSource(Config{
		Refresher: &fakeRefresher{},
		Token:     &oauth.Token{AccessToken: "fake-access-0", RefreshToken: "fake-refresh-0", TokenType: "Bearer", Expiry: exp},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer ts.Close()
	o2ctx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: base})
	o2tok := &oauth2.Token{AccessToken: "fake-access-0", RefreshToken: "fake-refresh-0", TokenType: "Bearer", Expiry: exp}

	clients := []struct {
		name   string
		c      *http.Client
		header bool
	}{
		{"bare", &http.Client{Transport: base}, false},
		{"bare-header", &http.Client{Transport: base}, true},
		{"oauth2", oauth2.NewClient(o2ctx, oauth2.StaticTokenSource(o2tok)), false},
		{"tokenbroker", &http.Client{Transport: &Transport{Source: ts, Base: base}}, false},
	}
	for _, bc := range clients {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
				if err != nil {
					b.Fatal(err)
				}
				if bc.header {
					req.Header.Set("Authorization", "Bearer fake-access-0")
				}
				resp, err := bc.c.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}

// BenchmarkRoundTripOverhead isolates what each RoundTripper adds: the base
// answers from memory with a canned 200, so no network noise hides a few
// hundred nanoseconds. bare calls the base directly.
func BenchmarkRoundTripOverhead(b *testing.B) {
	resp := &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Header: http.Header{}}
	base := roundTripFunc(func(*http.Request) (*http.Response, error) { return resp, nil })

	exp := time.Now().Add(24 * time.Hour)
	ts, err := NewTokenSource(Config{
		Refresher: &fakeRefresher{},
		Token:     &oauth.Token{AccessToken: "fake-access-0", RefreshToken: "fake-refresh-0", TokenType: "Bearer", Expiry: exp},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer ts.Close()
	o2tok := &oauth2.Token{AccessToken: "fake-access-0", RefreshToken: "fake-refresh-0", TokenType: "Bearer", Expiry: exp}

	transports := []struct {
		name string
		rt   http.RoundTripper
	}{
		{"bare", base},
		{"oauth2", &oauth2.Transport{Source: oauth2.ReuseTokenSource(nil, oauth2.StaticTokenSource(o2tok)), Base: base}},
		{"tokenbroker", &Transport{Source: ts, Base: base}},
	}
	req, err := http.NewRequest(http.MethodGet, "http://api.example.test/v1/things", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Accept", "application/json")
	for _, bt := range transports {
		b.Run(bt.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bt.rt.RoundTrip(req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// BenchmarkConcurrentExpired: per op, 1000 goroutines ask for a token that
// has just expired, from a provider that takes providerLatency to answer.
// It reports refresh-calls/op (provider calls per 1000 callers) and
// wait-over-provider-ms (time until the last caller has its token, minus
// the provider's latency). oauth2 is x/oauth2's ReuseTokenSource, which
// also refreshes once but holds a mutex while it does.
func BenchmarkConcurrentExpired(b *testing.B) {
	const (
		callers         = 1000
		providerLatency = 2 * time.Millisecond
	)
	// source returns the access token a caller got.
	type source func() (string, error)
	setups := []struct {
		name string
		new  func(calls *atomic.Int64) source
	}{
		{"oauth2", func(calls *atomic.Int64) source {
			rts := oauth2.ReuseTokenSource(&oauth2.Token{AccessToken: "fake-access-0", Expiry: time.Now().Add(-time.Second)},
				o2Func(func() (*oauth2.Token, error) {
					calls.Add(1)
					time.Sleep(providerLatency)
					return &oauth2.Token{AccessToken: "fake-access-1", Expiry: time.Now().Add(time.Hour)}, nil
				}))
			return func() (string, error) {
				t, err := rts.Token()
				if err != nil {
					return "", err
				}
				return t.AccessToken, nil
			}
		}},
		{"tokenbroker", func(calls *atomic.Int64) source {
			f := &fakeRefresher{fn: func(context.Context, int32, string) (*oauth.Token, error) {
				calls.Add(1)
				time.Sleep(providerLatency)
				return &oauth.Token{AccessToken: "fake-access-1", RefreshToken: "fake-refresh-1", Expiry: time.Now().Add(time.Hour)}, nil
			}}
			ts, err := NewTokenSource(Config{Refresher: f, Token: &oauth.Token{
				AccessToken: "fake-access-0", RefreshToken: "fake-refresh-0", Expiry: time.Now().Add(-time.Second)}})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			return func() (string, error) {
				t, err := ts.Token(ctx)
				if err != nil {
					return "", err
				}
				return t.AccessToken, nil
			}
		}},
	}
	for _, sc := range setups {
		b.Run(sc.name, func(b *testing.B) {
			var calls atomic.Int64
			var over time.Duration
			b.ReportAllocs()
			for b.Loop() {
				get := sc.new(&calls)
				var ready, wg sync.WaitGroup
				startGate := make(chan struct{})
				ready.Add(callers)
				for range callers {
					wg.Go(func() {
						ready.Done()
						<-startGate
						if tok, err := get(); err != nil || tok != "fake-access-1" {
							b.Error("caller did not get the new token")
						}
					})
				}
				ready.Wait()
				start := time.Now()
				close(startGate)
				wg.Wait()
				over += time.Since(start) - providerLatency
			}
			b.ReportMetric(float64(calls.Load())/float64(b.N), "refresh-calls/op")
			b.ReportMetric(float64(over.Microseconds())/1000/float64(b.N), "wait-over-provider-ms")
		})
	}
}

type o2Func func() (*oauth2.Token, error)

func (f o2Func) Token() (*oauth2.Token, error) { return f() }
