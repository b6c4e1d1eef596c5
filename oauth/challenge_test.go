package oauth

import (
	"errors"
	"net/http"
	"reflect"
	"testing"
)

func TestParseBearerChallenge(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers []string
		ok      bool
		want    BearerChallenge
	}{
		{"none", nil, false, BearerChallenge{}},
		{"basic only", []string{`Basic realm="x"`}, false, BearerChallenge{}},
		{"bare scheme", []string{`Bearer`}, true, BearerChallenge{}},
		{"RFC 6750 example", []string{`Bearer realm="example", error="invalid_token", error_description="The access token expired"`},
			true, BearerChallenge{Realm: "example", Error: "invalid_token", ErrorDescription: "The access token expired"}},
		{"insufficient scope", []string{`Bearer error="insufficient_scope", scope="files:read files:write", resource_metadata="https://mcp.example/.well-known/oauth-protected-resource"`},
			true, BearerChallenge{Error: "insufficient_scope", Scope: "files:read files:write",
				ResourceMetadata: "https://mcp.example/.well-known/oauth-protected-resource"}},
		{"case and tokens", []string{`bearer ERROR=invalid_token,Realm=api`}, true, BearerChallenge{Error: "invalid_token", Realm: "api"}},
		{"second challenge", []string{`Basic realm="b", Bearer realm="a", error="invalid_token"`}, true, BearerChallenge{Realm: "a", Error: "invalid_token"}},
		{"after another scheme's params", []string{`DPoP algs="ES256", Bearer error="invalid_token"`}, true, BearerChallenge{Error: "invalid_token"}},
		{"second header", []string{`Basic realm="b"`, `Bearer error="invalid_token"`}, true, BearerChallenge{Error: "invalid_token"}},
		{"quoted pair", []string{`Bearer error_description="say \"hi\", then \\ go", error="invalid_token"`}, true,
			BearerChallenge{ErrorDescription: `say "hi", then \ go`, Error: "invalid_token"}},
		{"spaces around =", []string{`Bearer error = "invalid_token" , realm = "r"`}, true, BearerChallenge{Error: "invalid_token", Realm: "r"}},
		{"first of duplicates", []string{`Bearer error="invalid_token", error="insufficient_scope"`}, true, BearerChallenge{Error: "invalid_token"}},
		{"unterminated quote", []string{`Bearer error="invalid_tok`}, true, BearerChallenge{Error: "invalid_tok"}},
		{"garbage", []string{`Bearer error=/x, realm="r"`}, true, BearerChallenge{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tc.headers {
				h.Add("WWW-Authenticate", v)
			}
			got, ok := ParseBearerChallenge(h)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			got.Params = nil
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func FuzzParseBearerChallenge(f *testing.F) {
	f.Add(`Bearer realm="example", error="invalid_token"`)
	f.Add(`Basic realm="b", Bearer error=insufficient_scope, scope="a b"`)
	f.Add(`Bearer abc==, x="\`)
	f.Fuzz(func(t *testing.T, v string) {
		h := http.Header{"Www-Authenticate": {v}}
		ParseBearerChallenge(h) // must terminate without panicking
	})
}

func TestInsufficientScopeError(t *testing.T) {
	var err error = &InsufficientScopeError{StatusCode: 403, Challenge: BearerChallenge{Scope: "write"}}
	if !errors.Is(err, ErrInsufficientScope) || errors.Is(err, ErrReauthRequired) {
		t.Errorf("errors.Is: want ErrInsufficientScope only")
	}
	if err.Error() != `oauth: the resource answered HTTP 403 insufficient_scope; it needs scope "write"` {
		t.Errorf("Error() = %q", err.Error())
	}
}
