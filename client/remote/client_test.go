package remote

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth"
)

// flaky answers 503 provider_unavailable to the first n requests, then 200
// with body, and counts requests.
func flaky(t *testing.T, n int32, retryAfter, body string) (*Client, *atomic.Int32) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= n {
			w.Header().Set("Retry-After", retryAfter)
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":{"code":"provider_unavailable","message":"try later"}}`))
			return
		}
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	c, err := New(Config{BaseURL: srv.URL + "/", APIKey: "tbk_test", Retry: oauth.Backoff{Base: time.Millisecond, Max: 2 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	return c, &calls
}

func TestRetriesOnlyWhereSafe(t *testing.T) {
	ctx := context.Background()
	c, calls := flaky(t, 2, "1", `{"access_token":"fake","token_type":"Bearer"}`)
	if tok, err := c.Token(ctx, "a"); err != nil || tok.AccessToken != "fake" || calls.Load() != 3 {
		t.Errorf("GET token: %v after %d requests; want success on the third", err, calls.Load())
	}

	c, calls = flaky(t, 1, "1", `{"id":"a"}`)
	_, err := c.CreateConnection(ctx, ImportRequest{ID: "a", Provider: "p"})
	if !errors.Is(err, oauth.ErrTransient) || oauth.RetryAfter(err) != time.Second || calls.Load() != 1 {
		t.Errorf("POST create: %v (retry after %v) after %d requests; want one request and a transient error",
			err, oauth.RetryAfter(err), calls.Load())
	}

	// A Retry-After beyond what a call waits is the caller's to honour.
	c, calls = flaky(t, 1, "3600", `{}`)
	if _, err := c.GetConnection(ctx, "a"); !errors.Is(err, oauth.ErrTransient) || calls.Load() != 1 {
		t.Errorf("GET with Retry-After 3600: %v after %d requests; want the error at once", err, calls.Load())
	}
}

func TestNewChecksConfig(t *testing.T) {
	for _, cfg := range []Config{
		{BaseURL: "", APIKey: "k"},
		{BaseURL: "ftp://x", APIKey: "k"},
		{BaseURL: "http://127.0.0.1:1", APIKey: " "},
		{BaseURL: "http://127.0.0.1:1", APIKey: "k", Retry: oauth.Backoff{MaxAttempts: -1}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%q): want an error", cfg.BaseURL)
		}
	}
}

func TestPathValuesAreEscaped(t *testing.T) {
	c, err := New(Config{BaseURL: "http://127.0.0.1:1/prefix/", APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.url(opGetToken, []string{"a/b?c"}, nil), "http://127.0.0.1:1/prefix/v1/connections/a%2Fb%3Fc/token"; got != want {
		t.Errorf("url = %q, want %q", got, want)
	}
}
