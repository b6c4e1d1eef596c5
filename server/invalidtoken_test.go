package server

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
)

// With refresh_on_invalid_token a provider's 401 is a refresh trigger only
// when its challenge says invalid_token; a 403 insufficient_scope never is.
func TestProxyRefreshOnInvalidTokenOnly(t *testing.T) {
	var answer atomic.Value // the challenge the API sends with its 401/403
	var calls atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) > 1 {
			w.WriteHeader(http.StatusOK) // the replay, or a second call
			return
		}
		a := answer.Load().([2]string)
		w.Header().Set("WWW-Authenticate", a[1])
		if a[0] == "403" {
			w.WriteHeader(http.StatusForbidden)
		} else {
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	t.Cleanup(api.Close)
	base, _ := url.Parse(api.URL)
	h := newHarness(t, harnessOptions{server: func(o *Options) {
		o.Targets[provAcme] = ProxyTarget{BaseURL: base, RefreshOn: []int{}, RefreshOnInvalidToken: true}
	}})
	h.importConn("c1", provAcme, nil)
	for _, tc := range []struct {
		status, challenge string
		wantStatus        int
		wantRefresh       bool
	}{
		{"401", `Bearer error="invalid_token", error_description="expired"`, http.StatusOK, true},
		{"401", `Bearer realm="api"`, http.StatusUnauthorized, false},
		{"401", `Bearer error="invalid_request"`, http.StatusUnauthorized, false},
		{"403", `Bearer error="insufficient_scope", scope="admin"`, http.StatusForbidden, false},
	} {
		calls.Store(0)
		answer.Store([2]string{tc.status, tc.challenge})
		before := h.authz.RefreshCalls()
		r := h.do("POST", "/v1/proxy/c1/x", h.tokensKey, map[string]any{"a": 1}, nil)
		refreshed := h.authz.RefreshCalls() > before
		if r.status != tc.wantStatus || refreshed != tc.wantRefresh {
			t.Errorf("%s %s: status %d refreshed %v, want %d %v", tc.status, tc.challenge, r.status, refreshed, tc.wantStatus, tc.wantRefresh)
		}
	}
}
