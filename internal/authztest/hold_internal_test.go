package authztest

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// watchHold makes srv report when an answer starts being held and how the
// hold ended.
func watchHold(srv *Server) (held <-chan struct{}, sent <-chan bool) {
	h, s := make(chan struct{}, 8), make(chan bool, 8)
	onHold := func() { h <- struct{}{} }
	onDone := func(ok bool) { s <- ok }
	srv.onHold.Store(&onHold)
	srv.onHoldDone.Store(&onDone)
	return h, s
}

// refreshAsync sends a refresh request with ctx and reports its outcome.
func refreshAsync(ctx context.Context, srv *Server, rt string) <-chan error {
	errc := make(chan error, 1)
	go func() {
		status, _, err := srv.post(ctx, srv.TokenURL(), url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
		if err == nil && status != http.StatusOK {
			err = errors.New("refresh answered " + http.StatusText(status))
		}
		errc <- err
	}()
	return errc
}

// TestLostAnswer models a client that crashes mid-refresh: the provider has
// rotated the refresh token, the client never sees the new one.
func TestLostAnswer(t *testing.T) {
	srv := New(t, Options{})
	at0, rt0, _ := srv.IssueTokens(t, "read")
	srv.SetTokenDelay(time.Hour)
	held, sent := watchHold(srv)

	ctx, cancel := context.WithCancel(t.Context())
	errc := refreshAsync(ctx, srv, rt0)
	<-held // processed; the answer waits
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("client error %v; want context.Canceled", err)
	}
	if <-sent {
		t.Errorf("the held answer was sent after the client cancelled")
	}

	srv.SetTokenDelay(0)
	if srv.Active(t, at0) {
		t.Errorf("old access token active: the refresh was not processed before the answer was held")
	}
	status, body, err := srv.post(t.Context(), srv.TokenURL(), url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt0}})
	if err != nil || status != http.StatusBadRequest || !strings.Contains(string(body), `"error":"invalid_grant"`) {
		t.Errorf("retry with the old refresh token: status %d, err %v; want 400 invalid_grant", status, err)
	}
	if srv.ReuseDetected() != 1 {
		t.Errorf("ReuseDetected = %d; want 1", srv.ReuseDetected())
	}
}

func TestHeldAnswerArrives(t *testing.T) {
	srv := New(t, Options{TokenDelay: time.Millisecond})
	_, sent := watchHold(srv)
	_, rt0, _ := srv.IssueTokens(t, "read") // held too
	if !<-sent {
		t.Errorf("hold reported the exchange's answer as not sent")
	}
	if err := <-refreshAsync(t.Context(), srv, rt0); err != nil {
		t.Errorf("delayed refresh: %v; want success", err)
	}
	if !<-sent {
		t.Errorf("hold reported the answer as not sent")
	}
}

func TestCloseDropsHeldAnswers(t *testing.T) {
	srv := New(t, Options{})
	_, rt0, _ := srv.IssueTokens(t, "read")
	srv.SetTokenDelay(time.Hour)
	held, sent := watchHold(srv)
	errc := refreshAsync(t.Context(), srv, rt0)
	<-held
	srv.Close() // must not wait an hour
	if <-sent {
		t.Errorf("held answer sent after Close")
	}
	if err := <-errc; err == nil {
		t.Errorf("client got an answer from a closed server")
	}
}
