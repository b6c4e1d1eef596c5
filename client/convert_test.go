package client

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/oauth"
)

// Every field of oauth.Token survives a trip through x/oauth2's Token.
func TestOAuth2ConversionRoundTrip(t *testing.T) {
	issued := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	full := &oauth.Token{
		AccessToken: "fake-access", TokenType: "Bearer", RefreshToken: "fake-refresh",
		Expiry: issued.Add(time.Hour), ExpiryDefaulted: true,
		RefreshExpiry: issued.Add(24 * time.Hour), RefreshHardExpiry: issued.Add(100 * 24 * time.Hour),
		Scope: "read write", IDToken: "fake-id-token", IssuedAt: issued,
	}
	for _, tc := range []struct {
		name string
		tok  *oauth.Token
	}{
		{"nil", nil},
		{"access only", &oauth.Token{AccessToken: "fake-access"}},
		{"refresh only", &oauth.Token{RefreshToken: "fake-refresh", TokenType: "Bearer"}},
		{"expiry", &oauth.Token{AccessToken: "fake-access", TokenType: "bearer", Expiry: issued}},
		{"scope and id token", &oauth.Token{AccessToken: "fake-access", Scope: "openid", IDToken: "fake-id-token"}},
		{"refresh expiries", &oauth.Token{AccessToken: "fake-access", RefreshToken: "fake-refresh",
			RefreshExpiry: issued.Add(time.Hour), RefreshHardExpiry: issued.Add(2 * time.Hour)}},
		{"defaulted expiry", &oauth.Token{AccessToken: "fake-access", Expiry: issued, ExpiryDefaulted: true, IssuedAt: issued.Add(-time.Hour)}},
		{"every field", full},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o2 := ToOAuth2(tc.tok)
			if got := FromOAuth2(o2); !reflect.DeepEqual(got, tc.tok) {
				t.Errorf("FromOAuth2(ToOAuth2(tok)) = %#v, want %#v (fields differ)", got, tc.tok)
			}
			if tc.tok == nil {
				return
			}
			if o2.AccessToken != tc.tok.AccessToken || o2.RefreshToken != tc.tok.RefreshToken ||
				o2.TokenType != tc.tok.TokenType || !o2.Expiry.Equal(tc.tok.Expiry) {
				t.Errorf("x/oauth2 fields lost: %+v", o2)
			}
			if got, _ := o2.Extra("id_token").(string); got != tc.tok.IDToken {
				t.Errorf("Extra(id_token) = %q, want %q", got, tc.tok.IDToken)
			}
			if got, _ := o2.Extra("scope").(string); got != tc.tok.Scope {
				t.Errorf("Extra(scope) = %q, want %q", got, tc.tok.Scope)
			}
		})
	}
}

// A token as x/oauth2 fetches it: extra fields from the JSON response,
// ExpiresIn set. FromOAuth2 reads the response's own fields, and the way
// back keeps x/oauth2's fields.
func TestFromOAuth2FetchedToken(t *testing.T) {
	expiry := time.Date(2030, 1, 2, 4, 4, 5, 0, time.UTC)
	var raw map[string]any
	body := `{"id_token":"fake-id-token","scope":"read","refresh_token_expires_in":"86400","x_refresh_token_hard_expires_in":8640000}`
	if err := json.Unmarshal([]byte(body), &raw); err != nil {
		t.Fatal(err)
	}
	o2 := (&oauth2.Token{AccessToken: "fake-access", TokenType: "Bearer", RefreshToken: "fake-refresh",
		Expiry: expiry, ExpiresIn: 3600}).WithExtra(raw)
	got := FromOAuth2(o2)
	issued := expiry.Add(-time.Hour)
	want := &oauth.Token{AccessToken: "fake-access", TokenType: "Bearer", RefreshToken: "fake-refresh",
		Expiry: expiry, IssuedAt: issued, Scope: "read", IDToken: "fake-id-token",
		RefreshExpiry: issued.Add(24 * time.Hour), RefreshHardExpiry: issued.Add(100 * 24 * time.Hour)}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("FromOAuth2 = %v %+v, want %+v", got, *got, *want)
	}
	back := ToOAuth2(got)
	if back.AccessToken != o2.AccessToken || back.RefreshToken != o2.RefreshToken || !back.Expiry.Equal(o2.Expiry) ||
		back.Extra("id_token") != "fake-id-token" || back.Extra("scope") != "read" {
		t.Errorf("ToOAuth2(FromOAuth2(t)) lost x/oauth2 fields")
	}
}

func TestNewOAuth2Refresher(t *testing.T) {
	if _, err := NewOAuth2Refresher(&oauth2.Config{ClientID: "c"}, oauth.Config{}); err == nil {
		t.Error("no TokenURL: want an error")
	}
	if _, err := NewOAuth2Refresher(&oauth2.Config{ClientID: "c", Endpoint: oauth2.Endpoint{TokenURL: "https://as.example/token", AuthStyle: 7}}, oauth.Config{}); err == nil {
		t.Error("unknown auth style: want an error")
	}
	ep, err := NewOAuth2Refresher(&oauth2.Config{ClientID: "c", Endpoint: oauth2.Endpoint{TokenURL: "https://as.example/token", AuthStyle: oauth2.AuthStyleInParams}}, oauth.Config{})
	if err != nil || ep == nil {
		t.Fatalf("NewOAuth2Refresher: %v", err)
	}
	if _, err := NewTokenSource(Config{Refresher: ep, Token: &oauth.Token{RefreshToken: "r"},
		RefreshParams: map[string][]string{"refresh_token": {"x"}}}); err == nil {
		t.Error("RefreshParams overriding refresh_token: want an error")
	}
	if _, err := NewTokenSource(Config{Refresher: &fakeRefresher{}, Token: &oauth.Token{RefreshToken: "r"},
		RefreshParams: map[string][]string{"scope": {"x"}}}); err == nil {
		t.Error("RefreshParams with a Refresher that cannot send them: want an error")
	}
}
