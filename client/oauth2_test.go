package client

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/oauth"
)

// OAuth2() inside x/oauth2's own client: tokens injected, an expired token
// refreshed through the adapter, errors passed through.
func TestOAuth2Adapter(t *testing.T) {
	u := newUpstream(t, acceptOnly("Bearer fake-access-1"))
	f := &fakeRefresher{}
	s := newSourceFor(t, initial(time.Now(), -time.Minute), f)
	base := &countingTransport{base: http.DefaultTransport}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: base})
	c := oauth2.NewClient(ctx, s.OAuth2())

	for range 3 {
		resp, err := c.Get(u.srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200 with the refreshed token", resp.StatusCode)
		}
	}
	if n := f.calls.Load(); n != 1 {
		t.Errorf("%d refreshes, want 1", n)
	}
	if n := base.resps.Load(); n != 3 {
		t.Errorf("%d requests through the base transport, want 3", n)
	}

	dead := newSourceFor(t, initial(time.Now(), -time.Minute), &fakeRefresher{fn: failWith(errTerminal)})
	_, err := oauth2.NewClient(ctx, dead.OAuth2()).Get(u.srv.URL)
	if !errors.Is(err, oauth.ErrReauthRequired) {
		t.Errorf("err = %v, want one matching ErrReauthRequired", err)
	}
}

func TestOAuth2Conversion(t *testing.T) {
	exp := time.Now().Add(time.Hour)
	tests := []struct {
		name      string
		tok       oauth.Token
		wantExtra map[string]any
	}{
		{"plain", oauth.Token{AccessToken: "fake-access-0", RefreshToken: "fake-refresh-0", TokenType: "bearer", Expiry: exp}, nil},
		{"with extras", oauth.Token{AccessToken: "fake-access-0", TokenType: "Bearer", Expiry: exp, IDToken: "fake-id", Scope: "read write"},
			map[string]any{"id_token": "fake-id", "scope": "read write"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSourceFor(t, &tt.tok, &fakeRefresher{})
			got, err := s.OAuth2().Token()
			if err != nil {
				t.Fatal(err)
			}
			if got.AccessToken != tt.tok.AccessToken || got.RefreshToken != tt.tok.RefreshToken ||
				got.TokenType != tt.tok.TokenType || !got.Expiry.Equal(exp) || !got.Valid() {
				t.Error("converted token differs from the source's")
			}
			for _, k := range []string{"id_token", "scope"} {
				if got.Extra(k) != tt.wantExtra[k] {
					t.Errorf("Extra(%q) = %v, want %v", k, got.Extra(k) != nil, tt.wantExtra[k] != nil)
				}
			}
			if a := testing.AllocsPerRun(50, func() { _, _ = s.OAuth2().Token() }); a != 0 {
				t.Errorf("adapter allocates %v times per call, want 0", a)
			}
		})
	}
}
