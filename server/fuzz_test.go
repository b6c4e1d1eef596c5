package server

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"sync"
	"testing"
)

// FuzzImportJSON: no body makes the import route panic or answer 5xx, and
// every refusal is a well-formed error.
func FuzzImportJSON(f *testing.F) {
	for _, seed := range []string{
		`{"id":"c1","provider":"acme","access_token":"fake-a","refresh_token":"fake-r","expires_in":3600}`,
		`{"id":"c2","provider":"acme","access_token":"fake-a","expires_at":"2030-01-01T00:00:00Z","metadata":{"a":[1,2,{"b":null}]}}`,
		`{"id":"c3","provider":"acme","access_token":"fake-a","expires_in":1e308}`,
		`{"id":"c4","provider":"acme","access_token":"fake-a","expires_in":-0.0001}`,
		`{"id":"c5","provider":"acme","access_token":"fake-a","refresh_token_expires_at":"0000-01-01T00:00:00Z"}`,
		`{"id":"c6","provider":"acme","access_token":"fake-a","expires_at":"9999-12-31T23:59:59+14:00"}`,
		`{"id":"c7","provider":"nodflt","access_token":"fake-a","metadata":"` + strings.Repeat("m", 70000) + `"}`,
		`{"ID":"c8","PROVIDER":"acme","Access_Token":"fake-a"}`,
		`{"id":"c9","provider":"acme","access_token":"fake-a","x":1}`,
		`{"id":"\u0000","provider":"acme","access_token":"fake-a"}`,
		`[]`, `null`, `""`, `{`, `{}{}`, `{"metadata":}`, "\xff\xfe", ``,
	} {
		f.Add([]byte(seed))
	}
	h := newHarness(f, harnessOptions{quiet: true, server: func(o *Options) { o.MaxBodyBytes = 128 << 10 }})
	handler := h.server.Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest("POST", "/v1/connections", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+h.adminKey)
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status %d for a %d-byte body", rec.Code, len(body))
		}
		if rec.Code == http.StatusCreated {
			return
		}
		var e errorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
			t.Fatalf("status %d without a well-formed error", rec.Code)
		}
	})
}

// recordingTransport stands in for the provider API: it remembers where
// each request went and answers 200.
type recordingTransport struct {
	mu   sync.Mutex
	last *url.URL
}

func (rt *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	u := *req.URL
	rt.mu.Lock()
	rt.last = &u
	rt.mu.Unlock()
	return &http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
}

func (rt *recordingTransport) take() *url.URL {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	u := rt.last
	rt.last = nil
	return u
}

// FuzzProxyPath: whatever follows /v1/proxy/c1/, the server neither panics
// nor answers 500, and a proxied request stays on the provider's host under
// its base path, even for an upstream that decodes the path again and
// resolves dot segments.
func FuzzProxyPath(f *testing.F) {
	for _, seed := range []string{
		"a/b", "a/b/", "", "../x", "%2e%2e/x", "%2E%2e", "%252e%252e/x", "a%2Fb", "a%5cb", `a\b`,
		"/evil", "https://evil.example/x", "@evil.example", "..;/x", "a?q=../..", "a#frag", "%", "%zz",
		"a%00", "...", ". /x", "%c0%ae%c0%ae/x", "a/%2e%2e%2f%2e%2e/b", "x?%2e%2e=1", "a;b/c",
	} {
		f.Add(seed)
	}
	rt := &recordingTransport{}
	base, _ := url.Parse("http://api.invalid/api/v2")
	h := newHarness(f, harnessOptions{quiet: true, server: func(o *Options) {
		o.ProxyTransport = rt
		o.Targets[provAcme] = ProxyTarget{BaseURL: base}
	}})
	h.importConn("c1", provAcme, nil)
	handler := h.server.Handler()

	f.Fuzz(func(t *testing.T, p string) {
		target := "/v1/proxy/c1/" + p
		if strings.ContainsAny(target, " \t\r\n") {
			return // cannot be sent in a request line
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return // net/http refuses it before any handler runs
		}
		req := httptest.NewRequest("GET", "/", nil)
		req.URL, req.RequestURI = u, target
		req.Header.Set("Authorization", "Bearer "+h.tokensKey)
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status %d for %q", rec.Code, target)
		}
		out := rt.take()
		if out == nil {
			return
		}
		if rec.Code != http.StatusOK {
			t.Fatalf("proxied, yet status %d", rec.Code)
		}
		if out.Scheme != "http" || out.Host != "api.invalid" || out.User != nil {
			t.Fatalf("%q reached %s://%s", target, out.Scheme, out.Host)
		}
		under := func(p string) bool {
			c := path.Clean(p)
			return c == "/api/v2" || strings.HasPrefix(c, "/api/v2/")
		}
		escaped := out.EscapedPath()
		if !strings.HasPrefix(escaped, "/api/v2/") || !under(out.Path) {
			t.Fatalf("%q reached path %q", target, escaped)
		}
		// An upstream that decodes once more and resolves dots.
		if twice, err := url.PathUnescape(out.Path); err == nil && !under(strings.ReplaceAll(twice, `\`, "/")) {
			t.Fatalf("%q reached %q after a second decoding", target, twice)
		}
	})
}
