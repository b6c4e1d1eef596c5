package oauth

import (
	"errors"
	"testing"
)

func TestEndpointRevoke(t *testing.T) {
	p := newEPProvider(t, func(int, epRequest) epReply { return epReply{Status: 200} })
	e, _ := newTestEndpoint(t, Config{TokenURL: p.url("/token"), RevocationURL: p.url("/revoke"),
		AuthStyle: AuthStyleParams})
	if err := e.Revoke(t.Context(), epRefresh1, "refresh_token"); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	reqs := p.requests()
	if len(reqs) != 1 {
		t.Fatalf("provider saw %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Method != "POST" || r.Path != "/revoke" {
		t.Errorf("request = %s %s, want POST /revoke", r.Method, r.Path)
	}
	if r.Form.Get("token") != epRefresh1 {
		t.Error("token form field is not the token to revoke (RFC 7009 §2.1)")
	}
	if r.Form.Get("token_type_hint") != "refresh_token" {
		t.Errorf("token_type_hint = %q", r.Form.Get("token_type_hint"))
	}
	if r.Form.Get("client_id") != epClientID || r.Form.Get("client_secret") != epClientSecret || r.HasBasic {
		t.Error("revocation request not authenticated as the client with form fields")
	}
}

func TestEndpointRevokeFailures(t *testing.T) {
	tests := []struct {
		name         string
		answers      []epReply
		wantErr      bool
		wantCode     string
		wantRequests int
	}{
		{"unsupported token type", []epReply{epJSON(400, `{"error":"unsupported_token_type"}`)}, true, "unsupported_token_type", 1},
		{"client refused", []epReply{epJSON(401, `{"error":"invalid_client"}`)}, true, "invalid_client", 1},
		{"503 with Retry-After is retried", []epReply{{Status: 503, Header: map[string]string{"Retry-After": "1"}}, {Status: 200}}, false, "", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newEPProvider(t, func(n int, _ epRequest) epReply { return tt.answers[min(n, len(tt.answers)-1)] })
			e, _ := newTestEndpoint(t, Config{TokenURL: p.url("/token"), RevocationURL: p.url("/revoke"),
				AuthStyle: AuthStyleHeader})
			err := e.Revoke(t.Context(), epAccess2, "")
			if n := len(p.requests()); n != tt.wantRequests {
				t.Errorf("provider saw %d requests, want %d", n, tt.wantRequests)
			}
			if !tt.wantErr {
				if err != nil {
					t.Errorf("Revoke: %v", err)
				}
				return
			}
			if oe := asError(t, err); oe.Code != tt.wantCode || oe.Op != "revoke" {
				t.Errorf("err = %v, want op revoke, code %s", err, tt.wantCode)
			}
		})
	}
}

func TestEndpointRevokeWithoutEndpoint(t *testing.T) {
	e, _ := newTestEndpoint(t, Config{TokenURL: "https://as.example.test/token"})
	if err := e.Revoke(t.Context(), epAccess2, ""); !errors.Is(err, ErrNoRevocation) {
		t.Errorf("err = %v, want ErrNoRevocation", err)
	}
}
