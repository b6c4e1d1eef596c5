package oauth

import (
	"net/url"
	"slices"
	"testing"
)

func TestEndpointRefreshWithParams(t *testing.T) {
	p := newEPProvider(t, func(int, epRequest) epReply { return epJSON(200, epTokenBody) })
	e, _ := newTestEndpoint(t, Config{TokenURL: p.url("/token"), AuthStyle: AuthStyleParams})

	params := url.Values{"resource": {"https://mcp.example/a", "https://mcp.example/b"}, "scope": {"read"}}
	if _, err := e.RefreshWithParams(t.Context(), epRefresh1, params); err != nil {
		t.Fatalf("RefreshWithParams: %v", err)
	}
	reqs := p.requests()
	if len(reqs) != 1 {
		t.Fatalf("provider saw %d requests, want 1", len(reqs))
	}
	f := reqs[0].Form
	if !slices.Equal(f["resource"], params["resource"]) || f.Get("scope") != "read" ||
		f.Get("grant_type") != "refresh_token" || f.Get("refresh_token") != epRefresh1 {
		t.Errorf("resource = %q, scope = %q; want both resources, scope, and the refresh grant", f["resource"], f.Get("scope"))
	}
	if len(params) != 2 || len(params["resource"]) != 2 {
		t.Error("RefreshWithParams changed the caller's parameters")
	}

	for _, k := range []string{"grant_type", "refresh_token", "client_id", "client_secret"} {
		if _, err := e.RefreshWithParams(t.Context(), epRefresh1, url.Values{k: {"x"}}); err == nil {
			t.Errorf("parameter %s: want an error, it is the request's own", k)
		}
	}
	if n := len(p.requests()); n != 1 {
		t.Errorf("refused parameters still reached the provider (%d requests)", n)
	}
}
