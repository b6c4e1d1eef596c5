package oauth

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Obviously fake credentials. Tests compare them as booleans and never print
// them.
const (
	epClientID     = "fake-client"
	epClientSecret = "fake-secret-not-real"
	epRefresh1     = "fake-refresh-token-1"
	epRefresh2     = "fake-refresh-token-2"
	epAccess2      = "fake-access-token-2"
)

var epNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// epRequest is what the fake provider saw.
type epRequest struct {
	Method, Path string
	Query        url.Values
	Form         url.Values // the request body's form, not the query
	Header       http.Header
	HasBasic     bool
	BasicUser    string // as sent: still form-urlencoded
	BasicPass    string
}

type epReply struct {
	Status int
	Header map[string]string
	Body   string
}

func epJSON(status int, body string) epReply {
	return epReply{Status: status, Header: map[string]string{"Content-Type": "application/json"}, Body: body}
}

const epTokenBody = `{"access_token":"` + epAccess2 + `","token_type":"Bearer","expires_in":3600,"refresh_token":"` + epRefresh2 + `"}`

// epProvider is a hand-written fake authorization server that records every
// request and answers with reply(n, request), n counting from 0.
type epProvider struct {
	srv   *httptest.Server
	reply func(n int, r epRequest) epReply

	mu   sync.Mutex
	seen []epRequest
}

func newEPProvider(t *testing.T, reply func(n int, r epRequest) epReply) *epProvider {
	t.Helper()
	p := &epProvider{reply: reply}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		user, pass, ok := r.BasicAuth()
		req := epRequest{
			Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Form: r.PostForm,
			Header: r.Header.Clone(), HasBasic: ok, BasicUser: user, BasicPass: pass,
		}
		p.mu.Lock()
		n := len(p.seen)
		p.seen = append(p.seen, req)
		p.mu.Unlock()
		rep := p.reply(n, req)
		for k, v := range rep.Header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(rep.Status)
		_, _ = io.WriteString(w, rep.Body)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *epProvider) requests() []epRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]epRequest(nil), p.seen...)
}

func (p *epProvider) url(path string) string { return p.srv.URL + path }

// epSleeper records the waits an Endpoint asks for instead of waiting.
type epSleeper struct {
	mu     sync.Mutex
	delays []time.Duration
}

func (s *epSleeper) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.delays = append(s.delays, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *epSleeper) recorded() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.delays...)
}

// newTestEndpoint fills in the fake client, a fixed clock, a fixed jitter of
// 0.5 and a recording Sleep.
func newTestEndpoint(t *testing.T, cfg Config) (*Endpoint, *epSleeper) {
	t.Helper()
	if cfg.ClientID == "" {
		cfg.ClientID = epClientID
	}
	if cfg.ClientSecret == "" {
		cfg.ClientSecret = epClientSecret
	}
	cfg.Now = func() time.Time { return epNow }
	cfg.Rand = func() float64 { return 0.5 }
	s := &epSleeper{}
	if cfg.Sleep == nil {
		cfg.Sleep = s.sleep
	}
	e, err := NewEndpoint(cfg)
	if err != nil {
		t.Fatalf("NewEndpoint: %v", err)
	}
	return e, s
}

func asError(t *testing.T, err error) *Error {
	t.Helper()
	var oe *Error
	if !errors.As(err, &oe) {
		t.Fatalf("error %v is %T, want *oauth.Error", err, err)
	}
	return oe
}

func TestEndpointRefreshSuccess(t *testing.T) {
	p := newEPProvider(t, func(int, epRequest) epReply { return epJSON(200, epTokenBody) })
	e, _ := newTestEndpoint(t, Config{TokenURL: p.url("/token"), AuthStyle: AuthStyleParams})

	tok, err := e.Refresh(t.Context(), epRefresh1)
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if tok.AccessToken != epAccess2 {
		t.Error("access token is not the one the provider issued")
	}
	if tok.RefreshToken != epRefresh2 {
		t.Error("refresh token is not the rotated one the provider issued")
	}
	if want := epNow.Add(time.Hour); !tok.Expiry.Equal(want) {
		t.Errorf("Expiry = %v, want %v (injected clock + expires_in)", tok.Expiry, want)
	}

	reqs := p.requests()
	if len(reqs) != 1 {
		t.Fatalf("provider saw %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Method != http.MethodPost || r.Path != "/token" {
		t.Errorf("request = %s %s, want POST /token", r.Method, r.Path)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		t.Errorf("Content-Type = %q", ct)
	}
	if a := r.Header.Get("Accept"); a != "application/json" {
		t.Errorf("Accept = %q, want application/json", a)
	}
	// RFC 6749 §6: grant_type=refresh_token and the refresh token, nothing
	// the client did not ask for.
	if g := r.Form.Get("grant_type"); g != "refresh_token" {
		t.Errorf("grant_type = %q, want refresh_token", g)
	}
	if r.Form.Get("refresh_token") != epRefresh1 {
		t.Error("refresh_token form field is not the token passed to Refresh")
	}
	if _, ok := r.Form["scope"]; ok {
		t.Error("scope sent although none was asked for")
	}
	if len(r.Query) != 0 {
		t.Errorf("request has a query %v; credentials belong in the body", r.Query)
	}
}

func TestEndpointRefreshKeepsOldRefreshToken(t *testing.T) {
	p := newEPProvider(t, func(int, epRequest) epReply {
		return epJSON(200, `{"access_token":"`+epAccess2+`","token_type":"Bearer","expires_in":60}`)
	})
	e, _ := newTestEndpoint(t, Config{TokenURL: p.url("/token")})
	tok, err := e.Refresh(t.Context(), epRefresh1)
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if tok.RefreshToken != epRefresh1 {
		t.Error("a response without refresh_token must keep the old refresh token")
	}
	if tok.AccessToken != epAccess2 {
		t.Error("access token not taken from the response")
	}
}

func TestEndpointDefaultExpiresIn(t *testing.T) {
	p := newEPProvider(t, func(int, epRequest) epReply {
		return epJSON(200, `{"access_token":"`+epAccess2+`","token_type":"Bearer"}`)
	})
	e, _ := newTestEndpoint(t, Config{TokenURL: p.url("/token"), DefaultExpiresIn: 2 * time.Hour})
	tok, err := e.Refresh(t.Context(), epRefresh1)
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if want := epNow.Add(2 * time.Hour); !tok.Expiry.Equal(want) || !tok.ExpiryDefaulted {
		t.Errorf("Expiry = %v defaulted=%v, want %v defaulted", tok.Expiry, tok.ExpiryDefaulted, want)
	}
}

func TestEndpointRefreshWithoutRefreshToken(t *testing.T) {
	p := newEPProvider(t, func(int, epRequest) epReply { return epJSON(200, epTokenBody) })
	e, _ := newTestEndpoint(t, Config{TokenURL: p.url("/token")})
	_, err := e.Refresh(t.Context(), "")
	oe := asError(t, err)
	if oe.Code != CodeNoRefreshToken || oe.Kind != KindTerminal || !errors.Is(err, ErrReauthRequired) {
		t.Errorf("err = %v (kind %v), want terminal %s", err, oe.Kind, CodeNoRefreshToken)
	}
	if n := len(p.requests()); n != 0 {
		t.Errorf("provider saw %d requests, want none", n)
	}
}

func TestEndpointClientAuthentication(t *testing.T) {
	const (
		oddID     = "fake client:1+é"
		oddSecret = "fake sec/ret:+%&="
		// RFC 6749 §2.3.1 / Appendix B: application/x-www-form-urlencoded.
		oddIDEncoded     = "fake+client%3A1%2B%C3%A9"
		oddSecretEncoded = "fake+sec%2Fret%3A%2B%25%26%3D"
	)
	tests := []struct {
		name       string
		style      AuthStyle
		id, secret string
		check      func(t *testing.T, r epRequest)
	}{
		{
			name: "header url-encodes id and secret", style: AuthStyleHeader, id: oddID, secret: oddSecret,
			check: func(t *testing.T, r epRequest) {
				if !r.HasBasic {
					t.Fatal("no Basic Authorization header")
				}
				if r.BasicUser != oddIDEncoded {
					t.Errorf("Basic user = %q, want %q", r.BasicUser, oddIDEncoded)
				}
				if r.BasicPass != oddSecretEncoded {
					t.Error("Basic password is not the form-urlencoded secret")
				}
				for _, k := range []string{"client_id", "client_secret"} {
					if _, ok := r.Form[k]; ok {
						t.Errorf("form carries %s as well as the header", k)
					}
				}
			},
		},
		{
			name: "params", style: AuthStyleParams, id: oddID, secret: oddSecret,
			check: func(t *testing.T, r epRequest) {
				if r.HasBasic {
					t.Error("Basic header sent in params style")
				}
				if r.Form.Get("client_id") != oddID {
					t.Errorf("client_id = %q, want %q", r.Form.Get("client_id"), oddID)
				}
				if r.Form.Get("client_secret") != oddSecret {
					t.Error("client_secret form field is not the secret")
				}
			},
		},
		{
			name: "public client in auto sends client_id only", style: AuthStyleAuto, id: epClientID, secret: "",
			check: func(t *testing.T, r epRequest) {
				if r.HasBasic {
					t.Error("Basic header sent for a client without a secret")
				}
				if r.Form.Get("client_id") != epClientID {
					t.Errorf("client_id = %q", r.Form.Get("client_id"))
				}
				if _, ok := r.Form["client_secret"]; ok {
					t.Error("empty client_secret field sent")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newEPProvider(t, func(int, epRequest) epReply { return epJSON(200, epTokenBody) })
			e, err := NewEndpoint(Config{
				TokenURL: p.url("/token"), ClientID: tt.id, ClientSecret: tt.secret, AuthStyle: tt.style,
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.Refresh(t.Context(), epRefresh1); err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			reqs := p.requests()
			if len(reqs) != 1 {
				t.Fatalf("provider saw %d requests, want 1", len(reqs))
			}
			tt.check(t, reqs[0])
		})
	}
}

// refuseBasic answers like a provider that only accepts client_secret_post.
func refuseBasic(_ int, r epRequest) epReply {
	if r.HasBasic {
		return epJSON(401, `{"error":"invalid_client","error_description":"client authentication failed"}`)
	}
	return epJSON(200, epTokenBody)
}

func TestEndpointAutoFallsBackToParamsAndRemembers(t *testing.T) {
	p := newEPProvider(t, refuseBasic)
	cache := &AuthStyleCache{}
	e, _ := newTestEndpoint(t, Config{TokenURL: p.url("/token"), AuthStyles: cache})

	if _, err := e.Refresh(t.Context(), epRefresh1); err != nil {
		t.Fatalf("first Refresh: %v", err)
	}
	reqs := p.requests()
	if len(reqs) != 2 || !reqs[0].HasBasic || reqs[1].HasBasic || reqs[1].Form.Get("client_id") != epClientID {
		t.Fatalf("want header attempt then params attempt; saw %d requests", len(reqs))
	}
	if s, ok := cache.lookup(p.url("/token"), epClientID); !ok || s != AuthStyleParams {
		t.Errorf("cache = %v, %v; want params remembered", s, ok)
	}

	if _, err := e.Refresh(t.Context(), epRefresh2); err != nil {
		t.Fatalf("second Refresh: %v", err)
	}
	reqs = p.requests()
	if len(reqs) != 3 {
		t.Fatalf("second refresh made %d requests, want exactly 1", len(reqs)-2)
	}
	if reqs[2].HasBasic || reqs[2].Form.Get("client_secret") != epClientSecret {
		t.Error("second refresh did not go straight to params")
	}

	// Another Endpoint sharing the cache benefits too.
	other, _ := newTestEndpoint(t, Config{TokenURL: p.url("/token"), AuthStyles: cache})
	if _, err := other.ClientCredentials(t.Context()); err != nil {
		t.Fatalf("ClientCredentials: %v", err)
	}
	if reqs = p.requests(); len(reqs) != 4 || reqs[3].HasBasic {
		t.Errorf("endpoint sharing the cache made %d requests (basic=%v), want 1 with params",
			len(reqs)-3, reqs[len(reqs)-1].HasBasic)
	}
}

func TestEndpointAutoRemembersHeader(t *testing.T) {
	p := newEPProvider(t, func(int, epRequest) epReply { return epJSON(200, epTokenBody) })
	cache := &AuthStyleCache{}
	e, _ := newTestEndpoint(t, Config{TokenURL: p.url("/token"), AuthStyles: cache})
	for i := range 2 {
		if _, err := e.Refresh(t.Context(), epRefresh1); err != nil {
			t.Fatalf("Refresh %d: %v", i, err)
		}
	}
	reqs := p.requests()
	if len(reqs) != 2 || !reqs[0].HasBasic || !reqs[1].HasBasic {
		t.Errorf("want two header-authenticated requests, one per refresh; saw %d", len(reqs))
	}
	if s, ok := cache.lookup(p.url("/token"), epClientID); !ok || s != AuthStyleHeader {
		t.Errorf("cache = %v, %v; want header remembered", s, ok)
	}
}

func TestEndpointAutoFallbackTriggers(t *testing.T) {
	tests := []struct {
		name         string
		headerAnswer epReply
		wantRequests int
	}{
		{"401 invalid_client", epJSON(401, `{"error":"invalid_client"}`), 2},
		{"401 without body", epReply{Status: 401}, 2},
		{"400 invalid_client", epJSON(400, `{"error":"invalid_client"}`), 2},
		{"400 unauthorized_client", epJSON(400, `{"error":"unauthorized_client"}`), 2},
		{"400 invalid_request", epJSON(400, `{"error":"invalid_request"}`), 2},
		{"400 invalid_grant is about the grant", epJSON(400, `{"error":"invalid_grant"}`), 1},
		{"403 is not a client refusal", epJSON(403, `{"error":"access_denied"}`), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newEPProvider(t, func(_ int, r epRequest) epReply {
				if r.HasBasic {
					return tt.headerAnswer
				}
				return epJSON(200, epTokenBody)
			})
			cache := &AuthStyleCache{}
			e, _ := newTestEndpoint(t, Config{TokenURL: p.url("/token"), AuthStyles: cache})
			_, err := e.Refresh(t.Context(), epRefresh1)
			if n := len(p.requests()); n != tt.wantRequests {
				t.Fatalf("provider saw %d requests, want %d", n, tt.wantRequests)
			}
			_, remembered := cache.lookup(p.url("/token"), epClientID)
			if tt.wantRequests == 2 {
				if err != nil || !remembered {
					t.Errorf("fallback: err = %v, remembered = %v; want success, remembered", err, remembered)
				}
			} else if err == nil || remembered {
				t.Errorf("no fallback: err = %v, remembered = %v; want the header answer, nothing remembered", err, remembered)
			}
		})
	}
}

func TestEndpointAutoBothRefusedReturnsSecondAnswer(t *testing.T) {
	p := newEPProvider(t, func(_ int, r epRequest) epReply {
		if r.HasBasic {
			return epJSON(401, `{"error":"invalid_client"}`)
		}
		return epJSON(400, `{"error":"unauthorized_client","error_description":"grant not allowed"}`)
	})
	cache := &AuthStyleCache{}
	e, _ := newTestEndpoint(t, Config{TokenURL: p.url("/token"), AuthStyles: cache})
	_, err := e.Refresh(t.Context(), epRefresh1)
	oe := asError(t, err)
	if oe.StatusCode != 400 || oe.Code != "unauthorized_client" || !Terminal(err) {
		t.Errorf("err = %v; want the params answer (400 unauthorized_client, terminal)", err)
	}
	if n := len(p.requests()); n != 2 {
		t.Errorf("provider saw %d requests, want 2 (one per style, no loop)", n)
	}
	if _, ok := cache.lookup(p.url("/token"), epClientID); ok {
		t.Error("a style was remembered although neither worked")
	}
}

func TestEndpointRetriesTransientFailures(t *testing.T) {
	p := newEPProvider(t, func(n int, _ epRequest) epReply {
		if n < 2 {
			return epReply{Status: 503, Header: map[string]string{"Content-Type": "text/html"}, Body: "<html>busy</html>"}
		}
		return epJSON(200, epTokenBody)
	})
	e, s := newTestEndpoint(t, Config{TokenURL: p.url("/token"), AuthStyle: AuthStyleParams})
	tok, err := e.Refresh(t.Context(), epRefresh1)
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if tok.AccessToken != epAccess2 {
		t.Error("token is not the one from the successful answer")
	}
	if n := len(p.requests()); n != 3 {
		t.Errorf("provider saw %d requests, want 3", n)
	}
	// Rand is fixed at 0.5: half of 250ms, then half of 500ms.
	want := []time.Duration{125 * time.Millisecond, 250 * time.Millisecond}
	if got := s.recorded(); !equalDurations(got, want) {
		t.Errorf("backoff delays = %v, want %v", got, want)
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestEndpointRetryGivesUpAfterMaxAttempts(t *testing.T) {
	p := newEPProvider(t, func(int, epRequest) epReply { return epJSON(503, `{"error":"server_error"}`) })
	e, s := newTestEndpoint(t, Config{TokenURL: p.url("/token"), AuthStyle: AuthStyleParams,
		Retry: Backoff{MaxAttempts: 4}})
	_, err := e.Refresh(t.Context(), epRefresh1)
	oe := asError(t, err)
	if oe.StatusCode != 503 || !errors.Is(err, ErrTransient) || oe.OutcomeUnknown {
		t.Errorf("err = %v (outcome unknown %v), want transient 503", err, oe.OutcomeUnknown)
	}
	if n := len(p.requests()); n != 4 {
		t.Errorf("provider saw %d requests, want MaxAttempts=4", n)
	}
	if n := len(s.recorded()); n != 3 {
		t.Errorf("slept %d times, want 3", n)
	}
}

func TestEndpointGarbledSuccessIsRetried(t *testing.T) {
	p := newEPProvider(t, func(n int, _ epRequest) epReply {
		if n == 0 {
			return epReply{Status: 200, Header: map[string]string{"Content-Type": "text/html"}, Body: "<html>login</html>"}
		}
		return epJSON(200, epTokenBody)
	})
	e, _ := newTestEndpoint(t, Config{TokenURL: p.url("/token"), AuthStyle: AuthStyleParams})
	if _, err := e.Refresh(t.Context(), epRefresh1); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if n := len(p.requests()); n != 2 {
		t.Errorf("provider saw %d requests, want 2", n)
	}
}

func TestEndpointRetryAfter(t *testing.T) {
	t.Run("honoured", func(t *testing.T) {
		p := newEPProvider(t, func(n int, _ epRequest) epReply {
			if n == 0 {
				return epReply{Status: 503, Header: map[string]string{"Retry-After": "1"}}
			}
			return epJSON(200, epTokenBody)
		})
		e, s := newTestEndpoint(t, Config{TokenURL: p.url("/token"), AuthStyle: AuthStyleParams})
		if _, err := e.Refresh(t.Context(), epRefresh1); err != nil {
			t.Fatalf("Refresh: %v", err)
		}
		got := s.recorded()
		if len(got) != 1 || got[0] < time.Second {
			t.Errorf("slept %v, want one wait of at least 1s", got)
		}
	})
	t.Run("longer than Max is returned at once", func(t *testing.T) {
		p := newEPProvider(t, func(int, epRequest) epReply {
			return epReply{Status: 429, Header: map[string]string{"Retry-After": "3600"}}
		})
		e, s := newTestEndpoint(t, Config{TokenURL: p.url("/token"), AuthStyle: AuthStyleParams})
		_, err := e.Refresh(t.Context(), epRefresh1)
		if RetryAfter(err) != time.Hour || !errors.Is(err, ErrTransient) {
			t.Errorf("err = %v, RetryAfter = %v; want transient with RetryAfter 1h", err, RetryAfter(err))
		}
		if n := len(p.requests()); n != 1 {
			t.Errorf("provider saw %d requests, want 1", n)
		}
		if got := s.recorded(); len(got) != 0 {
			t.Errorf("slept %v, want no sleep", got)
		}
	})
	t.Run("beyond the context deadline is returned at once", func(t *testing.T) {
		p := newEPProvider(t, func(int, epRequest) epReply {
			return epReply{Status: 503, Header: map[string]string{"Retry-After": "120"}}
		})
		e, s := newTestEndpoint(t, Config{TokenURL: p.url("/token"), AuthStyle: AuthStyleParams,
			Retry: Backoff{Max: time.Hour}})
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		_, err := e.Refresh(ctx, epRefresh1)
		if RetryAfter(err) != 2*time.Minute {
			t.Errorf("err = %v, want RetryAfter 2m", err)
		}
		if n := len(p.requests()); n != 1 {
			t.Errorf("provider saw %d requests, want 1", n)
		}
		if got := s.recorded(); len(got) != 0 {
			t.Errorf("slept %v, want no sleep", got)
		}
	})
}

func TestEndpointAnswersThatAreNotRetried(t *testing.T) {
	tests := []struct {
		name         string
		style        AuthStyle
		answer       epReply
		wantTerminal bool
	}{
		{"invalid_grant", AuthStyleParams, epJSON(400, `{"error":"invalid_grant","error_description":"token revoked"}`), true},
		{"401 invalid_client, header", AuthStyleHeader, epJSON(401, `{"error":"invalid_client"}`), true},
		{"401 invalid_client, params", AuthStyleParams, epJSON(401, `{"error":"invalid_client"}`), true},
		{"401 without body, header", AuthStyleHeader, epReply{Status: 401}, false},
		{"400 invalid_request", AuthStyleParams, epJSON(400, `{"error":"invalid_request"}`), false},
		{"200 with error field", AuthStyleParams, epJSON(200, `{"error":"bad_verification_code"}`), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newEPProvider(t, func(int, epRequest) epReply { return tt.answer })
			e, s := newTestEndpoint(t, Config{TokenURL: p.url("/token"), AuthStyle: tt.style})
			_, err := e.Refresh(t.Context(), epRefresh1)
			if err == nil {
				t.Fatal("Refresh succeeded")
			}
			if n := len(p.requests()); n != 1 {
				t.Errorf("provider saw %d requests, want exactly 1", n)
			}
			if n := len(s.recorded()); n != 0 {
				t.Errorf("slept %d times, want none", n)
			}
			if tt.wantTerminal && !errors.Is(err, ErrReauthRequired) {
				t.Errorf("err = %v, want errors.Is ErrReauthRequired", err)
			}
		})
	}
}

func TestEndpointContextCancelledDuringBackoff(t *testing.T) {
	p := newEPProvider(t, func(int, epRequest) epReply { return epReply{Status: 503} })
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	slept := 0
	e, _ := newTestEndpoint(t, Config{
		TokenURL: p.url("/token"), AuthStyle: AuthStyleParams,
		Sleep: func(ctx context.Context, _ time.Duration) error {
			slept++
			cancel()
			<-ctx.Done()
			return ctx.Err()
		},
	})
	_, err := e.Refresh(ctx, epRefresh1)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if oe := asError(t, err); oe.StatusCode != 503 {
		t.Errorf("StatusCode = %d, want the last answer's 503", oe.StatusCode)
	}
	if n := len(p.requests()); n != 1 || slept != 1 {
		t.Errorf("requests = %d, sleeps = %d; want 1 and 1", n, slept)
	}
}

func TestEndpointContextAlreadyCancelled(t *testing.T) {
	p := newEPProvider(t, func(int, epRequest) epReply { return epJSON(200, epTokenBody) })
	e, _ := newTestEndpoint(t, Config{TokenURL: p.url("/token")})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := e.Refresh(ctx, epRefresh1); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if n := len(p.requests()); n != 0 {
		t.Errorf("provider saw %d requests, want none", n)
	}
}

func TestEndpointNetworkErrorIsTransient(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	tokenURL := srv.URL + "/token"
	srv.Close() // nothing listens there any more
	e, s := newTestEndpoint(t, Config{TokenURL: tokenURL, AuthStyle: AuthStyleParams})
	_, err := e.Refresh(t.Context(), epRefresh1)
	oe := asError(t, err)
	if oe.Code != CodeNetwork || oe.StatusCode != 0 || !errors.Is(err, ErrTransient) {
		t.Errorf("err = %v, want transient %q without status", err, CodeNetwork)
	}
	if n := len(s.recorded()); n != DefaultMaxAttempts-1 {
		t.Errorf("slept %d times, want %d (retried up to MaxAttempts)", n, DefaultMaxAttempts-1)
	}
}

func TestEndpointOversizedBodyIsNotAToken(t *testing.T) {
	huge := `{"access_token":"` + epAccess2 + `","pad":"` + strings.Repeat("x", maxResponseBody) + `"}`
	p := newEPProvider(t, func(int, epRequest) epReply { return epJSON(200, huge) })
	e, _ := newTestEndpoint(t, Config{TokenURL: p.url("/token"), AuthStyle: AuthStyleParams,
		Retry: Backoff{MaxAttempts: 1}})
	_, err := e.Refresh(t.Context(), epRefresh1)
	if oe := asError(t, err); oe.Code != CodeInvalidResponse {
		t.Errorf("err = %v, want %s", err, CodeInvalidResponse)
	}
}

func TestEndpointErrorsCarryNoSecrets(t *testing.T) {
	answers := []epReply{
		epJSON(400, `{"error":"invalid_grant"}`),
		epJSON(401, `{"error":"invalid_client"}`),
		{Status: 503, Body: "<html>down</html>"},
		{Status: 200, Body: "not json"},
	}
	for i, a := range answers {
		p := newEPProvider(t, func(int, epRequest) epReply { return a })
		for _, style := range []AuthStyle{AuthStyleAuto, AuthStyleHeader, AuthStyleParams} {
			e, _ := newTestEndpoint(t, Config{TokenURL: p.url("/token"), AuthStyle: style})
			_, err := e.Refresh(t.Context(), epRefresh1)
			if err == nil {
				t.Fatalf("answer %d: Refresh succeeded", i)
			}
			msg := err.Error()
			if strings.Contains(msg, epClientSecret) || strings.Contains(msg, epRefresh1) {
				t.Errorf("answer %d, style %v: error message contains a secret", i, style)
			}
		}
	}
}

func TestEndpointClientCredentials(t *testing.T) {
	p := newEPProvider(t, func(int, epRequest) epReply {
		return epJSON(200, `{"access_token":"`+epAccess2+`","token_type":"Bearer","expires_in":300}`)
	})
	e, _ := newTestEndpoint(t, Config{TokenURL: p.url("/token"), AuthStyle: AuthStyleHeader})
	tok, err := e.ClientCredentials(t.Context(), "read", "write")
	if err != nil {
		t.Fatalf("ClientCredentials: %v", err)
	}
	if tok.AccessToken != epAccess2 || tok.RefreshToken != "" {
		t.Error("token fields not as the provider issued them")
	}
	r := p.requests()[0]
	if r.Form.Get("grant_type") != "client_credentials" || r.Form.Get("scope") != "read write" || !r.HasBasic {
		t.Errorf("form = grant_type %q scope %q basic %v; want client_credentials, \"read write\", Basic auth (RFC 6749 §4.4.2)",
			r.Form.Get("grant_type"), r.Form.Get("scope"), r.HasBasic)
	}
}

func TestEndpointExchange(t *testing.T) {
	p := newEPProvider(t, func(int, epRequest) epReply { return epJSON(200, epTokenBody) })
	e, _ := newTestEndpoint(t, Config{TokenURL: p.url("/token"), AuthStyle: AuthStyleParams})
	const verifier = "fake-verifier-0123456789-0123456789-0123456789"
	if _, err := e.Exchange(t.Context(), "fake-code", "https://app.example.test/callback", verifier); err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	r := p.requests()[0]
	want := map[string]string{
		"grant_type":    "authorization_code",
		"code":          "fake-code",
		"redirect_uri":  "https://app.example.test/callback",
		"code_verifier": verifier,
		"client_id":     epClientID,
	}
	for k, v := range want {
		if r.Form.Get(k) != v {
			t.Errorf("form %s = %q, want %q (RFC 6749 §4.1.3, RFC 7636 §4.5)", k, r.Form.Get(k), v)
		}
	}
	if _, err := e.Exchange(t.Context(), "", "", ""); err == nil || !strings.Contains(err.Error(), "code is empty") {
		t.Errorf("empty code: err = %v, want one naming the empty code", err)
	}
}

func TestNewEndpointValidation(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // "" means valid
	}{
		{"token url", Config{ClientID: "c", TokenURL: "https://as.example.test/token"}, ""},
		{"issuer only", Config{ClientID: "c", Issuer: "https://as.example.test"}, ""},
		{"no client id", Config{TokenURL: "https://as.example.test/token"}, "ClientID"},
		{"no token url or issuer", Config{ClientID: "c"}, "TokenURL"},
		{"relative token url", Config{ClientID: "c", TokenURL: "/token"}, "TokenURL"},
		{"ftp token url", Config{ClientID: "c", TokenURL: "ftp://as.example.test/token"}, "TokenURL"},
		{"bad revocation url", Config{ClientID: "c", TokenURL: "https://a.test/t", RevocationURL: "revoke"}, "RevocationURL"},
		{"bad introspection url", Config{ClientID: "c", TokenURL: "https://a.test/t", IntrospectionURL: "http//x"}, "IntrospectionURL"},
		{"bad authorize url", Config{ClientID: "c", TokenURL: "https://a.test/t", AuthorizeURL: "x"}, "AuthorizeURL"},
		{"issuer with query", Config{ClientID: "c", Issuer: "https://as.example.test?x=1"}, "Issuer"},
		{"unknown auth style", Config{ClientID: "c", TokenURL: "https://a.test/t", AuthStyle: 7}, "AuthStyle"},
		{"negative default lifetime", Config{ClientID: "c", TokenURL: "https://a.test/t", DefaultExpiresIn: -1}, "DefaultExpiresIn"},
		{"negative attempts", Config{ClientID: "c", TokenURL: "https://a.test/t", Retry: Backoff{MaxAttempts: -1}}, "MaxAttempts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewEndpoint(tt.cfg)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("NewEndpoint: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("NewEndpoint err = %v, want one naming %s", err, tt.wantErr)
			}
		})
	}
}

func TestNewEndpointDefaultClientHasTimeout(t *testing.T) {
	e, err := NewEndpoint(Config{ClientID: "c", TokenURL: "https://as.example.test/token"})
	if err != nil {
		t.Fatal(err)
	}
	if e.client == http.DefaultClient || e.client.Timeout <= 0 {
		t.Errorf("default client timeout = %v, want a finite one", e.client.Timeout)
	}
}

func TestParseAuthStyle(t *testing.T) {
	tests := []struct {
		in      string
		want    AuthStyle
		wantErr bool
	}{
		{"", AuthStyleAuto, false},
		{"auto", AuthStyleAuto, false},
		{"header", AuthStyleHeader, false},
		{"client_secret_basic", AuthStyleHeader, false},
		{"params", AuthStyleParams, false},
		{"Client_Secret_Post", AuthStyleParams, false},
		{"private_key_jwt", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseAuthStyle(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseAuthStyle(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), tt.in) {
			t.Errorf("ParseAuthStyle(%q) error %q does not name the bad value", tt.in, err)
		}
		if err == nil {
			var back AuthStyle
			text, merr := got.MarshalText()
			if merr != nil || back.UnmarshalText(text) != nil || back != got {
				t.Errorf("%v does not round-trip through text", got)
			}
		}
	}
}
