package remote_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"

	"github.com/tokenbroker/tokenbroker/client"
	"github.com/tokenbroker/tokenbroker/client/remote"
)

// tokenbroker is a stand-in for a tokenbroker server and a provider API
// for the example: the server hands out "old" until it is reported stale,
// then "new"; the API accepts only "new".
func tokenbroker() (base, api string, stop func()) {
	var mu sync.Mutex
	current := "old"
	mux := http.NewServeMux()
	answer := func(w http.ResponseWriter) {
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": current, "token_type": "Bearer", "expires_in": 3600})
	}
	mux.HandleFunc("GET /v1/connections/{id}/token", func(w http.ResponseWriter, r *http.Request) { answer(w) })
	mux.HandleFunc("POST /v1/connections/{id}/token", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			StaleToken string `json:"stale_token"`
		}
		json.NewDecoder(r.Body).Decode(&in)
		mu.Lock()
		if in.StaleToken == current {
			current = "new" // the server refreshes once for every reporter
		}
		mu.Unlock()
		answer(w)
	})
	mux.HandleFunc("GET /api/me", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer new" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "hello")
	})
	srv := httptest.NewServer(mux)
	// A real program finds its key in its environment or a file.
	os.Setenv("TOKENBROKER_API_KEY", "tbk_example")
	return srv.URL, srv.URL + "/api/me", srv.Close
}

// A program's replicas share one connection's tokens through tokenbroker:
// under client.Transport, a 401 is reported to the server, which refreshes
// once for every replica, and the request is replayed once.
func ExampleNewTokenSource() {
	base, apiURL, stop := tokenbroker()
	defer stop()

	api, err := remote.New(remote.Config{
		BaseURL: base,
		APIKey:  os.Getenv("TOKENBROKER_API_KEY"), // a key with the tokens role
	})
	if err != nil {
		panic(err)
	}
	src, err := remote.NewTokenSource(remote.SourceConfig{Client: api, ConnectionID: "alice-github"})
	if err != nil {
		panic(err)
	}
	httpClient := &http.Client{Transport: &client.Transport{Source: src}}

	resp, err := httpClient.Get(apiURL)
	if err != nil {
		panic(err) // errors.Is(err, oauth.ErrReauthRequired): a person must reconnect
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
	// Output: 200 hello
}
