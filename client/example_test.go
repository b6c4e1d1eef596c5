package client_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/client"
	"github.com/tokenbroker/tokenbroker/oauth"
)

// provider is a stand-in authorization server and API for the examples:
// its token endpoint rotates refresh tokens, and its API accepts only the
// newest access token.
func provider() (tokenURL, apiURL string, stop func()) {
	var mu sync.Mutex
	n := 0
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		i := n
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"access-%d","refresh_token":"refresh-%d","token_type":"bearer","expires_in":3600,"scope":%q}`,
			i, i, r.PostFormValue("scope"))
	})
	mux.HandleFunc("GET /me", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		want := fmt.Sprintf("Bearer access-%d", n)
		mu.Unlock()
		if r.Header.Get("Authorization") != want {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "hello")
	})
	srv := httptest.NewServer(mux)
	return srv.URL + "/token", srv.URL + "/me", srv.Close
}

// A token source whose rotated tokens are saved before anyone uses them.
func ExampleNewTokenSource() {
	tokenURL, _, stop := provider()
	defer stop()

	endpoint, err := oauth.NewEndpoint(oauth.Config{
		ClientID:     "my-client",
		ClientSecret: os.Getenv("ACME_CLIENT_SECRET"), // never in source code
		TokenURL:     tokenURL,
	})
	if err != nil {
		panic(err)
	}
	stored := &oauth.Token{AccessToken: "access-0", RefreshToken: "refresh-0", Expiry: time.Now().Add(-time.Minute)}
	ts, err := client.NewTokenSource(client.Config{
		Refresher: endpoint,
		Token:     stored, // as loaded from your database
		Save: func(ctx context.Context, t *oauth.Token) error {
			// Write t to your database here. It runs before any caller
			// can use t, so a rotated refresh token is never lost.
			fmt.Println("saved a token that expires in", t.Expiry.Sub(t.IssuedAt))
			return nil
		},
	})
	if err != nil {
		panic(err)
	}
	defer ts.Close()

	tok, err := ts.Token(context.Background())
	if err != nil {
		panic(err)
	}
	fmt.Println("using", tok.AccessToken)
	// Output:
	// saved a token that expires in 1h0m0s
	// using access-1
}

// A Transport puts the token on every request and, when the API says the
// token is stale (401, or WWW-Authenticate error="invalid_token"),
// refreshes it and replays the request once.
func ExampleTransport() {
	tokenURL, apiURL, stop := provider()
	defer stop()

	endpoint, err := oauth.NewEndpoint(oauth.Config{ClientID: "my-client", TokenURL: tokenURL})
	if err != nil {
		panic(err)
	}
	// The token looks valid for an hour, but the provider has revoked it.
	ts, err := client.NewTokenSource(client.Config{
		Refresher: endpoint,
		Token:     &oauth.Token{AccessToken: "revoked", RefreshToken: "refresh-0", Expiry: time.Now().Add(time.Hour)},
	})
	if err != nil {
		panic(err)
	}
	defer ts.Close()

	httpClient := &http.Client{Transport: &client.Transport{Source: ts}}
	resp, err := httpClient.Get(apiURL)
	if err != nil {
		panic(err) // errors.Is(err, oauth.ErrReauthRequired): a person must reconnect
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
	// Output: 200 hello
}

// Start from an oauth2.Config and an oauth2.Token, send scope on every
// refresh (Microsoft Entra wants it; x/oauth2 cannot), and hand tokens back
// to x/oauth2 code.
func ExampleNewOAuth2Refresher() {
	tokenURL, _, stop := provider()
	defer stop()

	conf := &oauth2.Config{
		ClientID:     "my-client",
		ClientSecret: os.Getenv("ACME_CLIENT_SECRET"),
		Endpoint:     oauth2.Endpoint{TokenURL: tokenURL, AuthStyle: oauth2.AuthStyleInParams},
	}
	refresher, err := client.NewOAuth2Refresher(conf, oauth.Config{})
	if err != nil {
		panic(err)
	}
	old := &oauth2.Token{AccessToken: "access-0", RefreshToken: "refresh-0", Expiry: time.Now().Add(-time.Minute)}
	ts, err := client.NewTokenSource(client.Config{
		Refresher:     refresher,
		Token:         client.FromOAuth2(old),
		RefreshParams: url.Values{"scope": {"offline_access User.Read"}},
	})
	if err != nil {
		panic(err)
	}
	defer ts.Close()

	o2, err := ts.OAuth2().Token()
	if err != nil {
		panic(err)
	}
	fmt.Println(o2.AccessToken, o2.Extra("scope"))
	// Output: access-1 offline_access User.Read
}
