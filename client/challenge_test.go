package client

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth"
)

// challengeAPI answers every request with status and a WWW-Authenticate
// challenge until the token is fake-access-1, then 200.
func challengeAPI(t *testing.T, status int, challenge string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer fake-access-1" {
			return
		}
		w.Header().Set("WWW-Authenticate", challenge)
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestTransportChallenges(t *testing.T) {
	for _, tc := range []struct {
		name      string
		status    int
		challenge string
		transport Transport
		wantCode  int // status of the answer RoundTrip returns; 0: a step-up error
		refreshes int32
	}{
		{"invalid_token on 401", 401, `Bearer error="invalid_token"`, Transport{}, 200, 1},
		{"invalid_token on a status not in RefreshOn", 400, `Bearer error="invalid_token"`, Transport{}, 200, 1},
		{"invalid_token with refresh on status off", 401, `Bearer error="invalid_token"`, Transport{RefreshOn: []int{}}, 200, 1},
		{"invalid_token ignored", 400, `Bearer error="invalid_token"`, Transport{IgnoreInvalidToken: true}, 400, 0},
		{"invalid_token ignored, 401 still stale", 401, `Bearer error="invalid_token"`, Transport{IgnoreInvalidToken: true}, 200, 1},
		{"insufficient_scope on 403", 403, `Bearer error="insufficient_scope", scope="files:write"`, Transport{}, 0, 0},
		{"insufficient_scope even on a RefreshOn status", 401, `Bearer realm="r", error="insufficient_scope"`, Transport{}, 0, 0},
		{"insufficient_scope passed on", 403, `Bearer error="insufficient_scope"`, Transport{PassInsufficientScope: true}, 403, 0},
		{"insufficient_scope passed on, even on a RefreshOn status", 401, `Bearer error="insufficient_scope"`, Transport{PassInsufficientScope: true}, 401, 0},
		{"other challenge error", 400, `Bearer error="invalid_request"`, Transport{}, 400, 0},
		{"other scheme", 403, `Basic realm="x"`, Transport{}, 403, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := challengeAPI(t, tc.status, tc.challenge)
			f := &fakeRefresher{}
			tr := tc.transport
			tr.Source = newSourceFor(t, initial(time.Now(), time.Hour), f)
			resp, err := (&http.Client{Transport: &tr}).Get(api.URL)
			if tc.wantCode == 0 {
				var se *oauth.InsufficientScopeError
				if !errors.As(err, &se) || !errors.Is(err, oauth.ErrInsufficientScope) || se.StatusCode != tc.status {
					t.Fatalf("err = %v; want an *oauth.InsufficientScopeError for HTTP %d", err, tc.status)
				}
				if tc.status == 403 && se.Challenge.Scope != "files:write" {
					t.Errorf("step-up scope = %q, want files:write", se.Challenge.Scope)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != tc.wantCode {
					t.Errorf("status %d, want %d", resp.StatusCode, tc.wantCode)
				}
			}
			if n := f.calls.Load(); n != tc.refreshes {
				t.Errorf("%d refreshes, want %d", n, tc.refreshes)
			}
		})
	}
}
