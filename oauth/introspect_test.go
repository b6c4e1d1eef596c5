package oauth

import (
	"errors"
	"testing"
	"time"
)

func TestEndpointIntrospect(t *testing.T) {
	exp := time.Unix(1900000000, 0).UTC()
	tests := []struct {
		name string
		body string
		want Introspection
	}{
		{
			name: "active with exp",
			body: `{"active":true,"exp":1900000000,"iat":1899996400,"scope":"read write","client_id":"fake-client","token_type":"Bearer","sub":"u1","aud":["api1","api2"]}`,
			want: Introspection{Active: true, Exp: exp, IssuedAt: exp.Add(-time.Hour), Scope: "read write",
				ClientID: "fake-client", TokenType: "Bearer", Subject: "u1", Audience: []string{"api1", "api2"}},
		},
		{
			name: "exp as a string, aud as a string",
			body: `{"active":true,"exp":"1900000000","aud":"api1"}`,
			want: Introspection{Active: true, Exp: exp, Audience: []string{"api1"}},
		},
		{
			name: "active without exp",
			body: `{"active":true,"scope":"read"}`,
			want: Introspection{Active: true, Scope: "read"},
		},
		{
			name: "inactive says nothing else",
			body: `{"active":false,"exp":1900000000,"scope":"read"}`,
			want: Introspection{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newEPProvider(t, func(int, epRequest) epReply { return epJSON(200, tt.body) })
			e, _ := newTestEndpoint(t, Config{TokenURL: p.url("/token"), IntrospectionURL: p.url("/introspect"),
				AuthStyle: AuthStyleHeader})
			got, err := e.Introspect(t.Context(), epAccess2, "access_token")
			if err != nil {
				t.Fatalf("Introspect: %v", err)
			}
			if got.Active != tt.want.Active || !got.Exp.Equal(tt.want.Exp) || !got.IssuedAt.Equal(tt.want.IssuedAt) ||
				got.Scope != tt.want.Scope || got.ClientID != tt.want.ClientID || got.TokenType != tt.want.TokenType ||
				got.Subject != tt.want.Subject || len(got.Audience) != len(tt.want.Audience) {
				t.Errorf("Introspect = %+v, want %+v", got, tt.want)
			}

			reqs := p.requests()
			if len(reqs) != 1 {
				t.Fatalf("provider saw %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.Method != "POST" || r.Path != "/introspect" {
				t.Errorf("request = %s %s, want POST /introspect", r.Method, r.Path)
			}
			if r.Form.Get("token") != epAccess2 {
				t.Error("token form field is not the token asked about (RFC 7662 §2.1)")
			}
			if r.Form.Get("token_type_hint") != "access_token" {
				t.Errorf("token_type_hint = %q", r.Form.Get("token_type_hint"))
			}
			if !r.HasBasic || r.BasicUser != epClientID || r.BasicPass != epClientSecret {
				t.Error("introspection request not authenticated as the client with Basic")
			}
		})
	}
}

func TestEndpointIntrospectFailures(t *testing.T) {
	tests := []struct {
		name     string
		answer   epReply
		wantCode string
	}{
		{"no active member", epJSON(200, `{"scope":"read"}`), CodeInvalidResponse},
		{"active not a boolean", epJSON(200, `{"active":1}`), CodeInvalidResponse},
		{"exp garbage", epJSON(200, `{"active":true,"exp":"soon"}`), CodeInvalidResponse},
		{"exp negative", epJSON(200, `{"active":true,"exp":-5}`), CodeInvalidResponse},
		{"not JSON", epReply{Status: 200, Body: "<html/>"}, CodeInvalidResponse},
		{"client refused", epJSON(401, `{"error":"invalid_client"}`), "invalid_client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newEPProvider(t, func(int, epRequest) epReply { return tt.answer })
			e, _ := newTestEndpoint(t, Config{TokenURL: p.url("/token"), IntrospectionURL: p.url("/introspect"),
				AuthStyle: AuthStyleParams, Retry: Backoff{MaxAttempts: 1}})
			got, err := e.Introspect(t.Context(), epAccess2, "")
			if got != nil {
				t.Error("an answer was returned despite the error")
			}
			if oe := asError(t, err); oe.Code != tt.wantCode || oe.Op != "introspect" {
				t.Errorf("err = %v, want op introspect, code %s", err, tt.wantCode)
			}
			if _, ok := p.requests()[0].Form["token_type_hint"]; ok {
				t.Error("empty hint was sent")
			}
		})
	}
}

func TestEndpointIntrospectWithoutEndpoint(t *testing.T) {
	e, _ := newTestEndpoint(t, Config{TokenURL: "https://as.example.test/token"})
	if _, err := e.Introspect(t.Context(), epAccess2, ""); !errors.Is(err, ErrNoIntrospection) {
		t.Errorf("err = %v, want ErrNoIntrospection", err)
	}

	// An issuer that publishes none.
	p := docServer(t, func(base string) map[string]epReply {
		return map[string]epReply{wellKnown8414: epJSON(200, `{"issuer":"`+base+`","token_endpoint":"`+base+`/token"}`)}
	})
	e, _ = newTestEndpoint(t, Config{Issuer: p.srv.URL})
	if _, err := e.Introspect(t.Context(), epAccess2, ""); !errors.Is(err, ErrNoIntrospection) {
		t.Errorf("err = %v, want ErrNoIntrospection", err)
	}
}

func TestEndpointIntrospectDiscoversEndpoint(t *testing.T) {
	p := docServer(t, func(base string) map[string]epReply {
		return map[string]epReply{
			wellKnown8414: epJSON(200, metadataJSON(base, base)),
			"/introspect": epJSON(200, `{"active":true}`),
		}
	})
	e, _ := newTestEndpoint(t, Config{Issuer: p.srv.URL})
	in, err := e.Introspect(t.Context(), epAccess2, "")
	if err != nil || !in.Active {
		t.Fatalf("Introspect = %+v, %v", in, err)
	}
	if got := paths(p.requests()); len(got) != 2 || got[1] != "POST /introspect" {
		t.Errorf("requests = %v", got)
	}
}
