package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth"
)

// seen is one request as the upstream received it.
type seen struct {
	method, path, auth, custom, body string
}

// upstream is a fake API: it answers 200 "ok" to the access tokens it
// accepts and rejectStatus ("token rejected") to the others.
type upstream struct {
	srv          *httptest.Server
	accept       func(auth string) bool
	rejectStatus int
	// beforeReject, when set, runs before a rejection is sent.
	beforeReject func()

	mu   sync.Mutex
	reqs []seen
}

func newUpstream(t *testing.T, accept func(auth string) bool) *upstream {
	u := &upstream{accept: accept, rejectStatus: http.StatusUnauthorized}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		auth := r.Header.Get("Authorization")
		u.mu.Lock()
		u.reqs = append(u.reqs, seen{r.Method, r.URL.Path, auth, r.Header.Get("X-Custom"), string(body)})
		u.mu.Unlock()
		if u.accept(auth) {
			_, _ = io.WriteString(w, "ok")
			return
		}
		if u.beforeReject != nil {
			u.beforeReject()
		}
		w.WriteHeader(u.rejectStatus)
		_, _ = io.WriteString(w, "token rejected")
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) requests() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.reqs)
}

func acceptOnly(auth string) func(string) bool {
	return func(got string) bool { return got == auth }
}

// countingBody counts Close calls.
type countingBody struct {
	io.Reader
	closed *atomic.Int32
}

func (b countingBody) Close() error { b.closed.Add(1); return nil }

// countingTransport wraps every response body in a countingBody.
type countingTransport struct {
	base   http.RoundTripper
	closed atomic.Int32
	resps  atomic.Int32
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(req)
	if err == nil {
		c.resps.Add(1)
		orig := resp.Body
		resp.Body = struct {
			io.Reader
			io.Closer
		}{orig, closeFunc(func() error { c.closed.Add(1); return orig.Close() })}
	}
	return resp, err
}

type closeFunc func() error

func (f closeFunc) Close() error { return f() }

func newSourceFor(t *testing.T, tok *oauth.Token, f *fakeRefresher) *TokenSource {
	return mustSource(t, Config{Refresher: f, Token: tok})
}

func TestTransportInjectsToken(t *testing.T) {
	tests := []struct {
		tokenType, want string
	}{
		{"", "Bearer fake-access-0"},
		{"Bearer", "Bearer fake-access-0"},
		{"bearer", "Bearer fake-access-0"},
		{"BEARER", "Bearer fake-access-0"},
		{"mac", "MAC fake-access-0"},
		{"DPoP", "DPoP fake-access-0"},
	}
	for _, tt := range tests {
		t.Run(tt.tokenType, func(t *testing.T) {
			u := newUpstream(t, acceptOnly(tt.want))
			tok := initial(time.Now(), time.Hour)
			tok.TokenType = tt.tokenType
			c := &http.Client{Transport: &Transport{Source: newSourceFor(t, tok, &fakeRefresher{})}}
			resp, err := c.Get(u.srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("status %d: the upstream did not get the expected Authorization header", resp.StatusCode)
			}
		})
	}
}

func TestTransportDoesNotModifyRequest(t *testing.T) {
	u := newUpstream(t, acceptOnly("Bearer fake-access-1"))
	f := &fakeRefresher{}
	tr := &Transport{Source: newSourceFor(t, initial(time.Now(), time.Hour), f)}

	req, _ := http.NewRequest(http.MethodPut, u.srv.URL+"/x", strings.NewReader("payload"))
	req.Header.Set("X-Custom", "one")
	req.Header.Add("Accept", "a")
	req.Header.Add("Accept", "b")
	before := req.Header.Clone()
	acceptSlice := req.Header["Accept"]
	url, method, contentLength := *req.URL, req.Method, req.ContentLength

	resp, err := tr.RoundTrip(req) // 401, refresh, replay
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || f.calls.Load() != 1 {
		t.Fatalf("status %d after %d refreshes, want 200 after 1", resp.StatusCode, f.calls.Load())
	}
	if !maps.EqualFunc(req.Header, before, slices.Equal) {
		t.Errorf("caller's header changed: keys %v, want %v", slices.Sorted(maps.Keys(req.Header)), slices.Sorted(maps.Keys(before)))
	}
	if &req.Header["Accept"][0] != &acceptSlice[0] || len(req.Header["Accept"]) != 2 {
		t.Error("caller's header value slice replaced or changed")
	}
	if *req.URL != url || req.Method != method || req.ContentLength != contentLength {
		t.Error("caller's request fields changed")
	}
	if resp.Request == req {
		t.Error("the response's request is the caller's request, so it was sent as is")
	}
}

// 401 → one refresh → the same request replayed once with the new token.
func TestTransportRefreshAndReplay(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
		t.Run(method, func(t *testing.T) {
			u := newUpstream(t, acceptOnly("Bearer fake-access-1"))
			f := &fakeRefresher{}
			c := &http.Client{Transport: &Transport{Source: newSourceFor(t, initial(time.Now(), time.Hour), f)}}

			var body io.Reader
			if method == http.MethodPost {
				body = bytes.NewReader([]byte("payload"))
			}
			req, _ := http.NewRequest(method, u.srv.URL+"/api/v1", body)
			req.Header.Set("X-Custom", "kept")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || string(got) != "ok" {
				t.Fatalf("status %d, want 200 from the replay", resp.StatusCode)
			}
			if n := f.calls.Load(); n != 1 {
				t.Errorf("%d refreshes, want 1", n)
			}
			reqs := u.requests()
			if len(reqs) != 2 {
				t.Fatalf("upstream saw %d requests, want 2", len(reqs))
			}
			first, replay := reqs[0], reqs[1]
			if first.auth != "Bearer fake-access-0" || replay.auth != "Bearer fake-access-1" {
				t.Error("the replay does not carry the new token")
			}
			first.auth, replay.auth = "", ""
			if first != replay || replay.method != method || replay.custom != "kept" {
				t.Errorf("replay %+v differs from the first request %+v", replay, first)
			}
			if method == http.MethodPost && replay.body != "payload" {
				t.Errorf("replayed body %q, want the original", replay.body)
			}
		})
	}
}

// 100 requests rejected at once share one refresh.
func TestTransportConcurrent401s(t *testing.T) {
	const n = 100
	u := newUpstream(t, acceptOnly("Bearer fake-access-1"))
	var rejected atomic.Int32
	allIn := make(chan struct{})
	u.beforeReject = func() {
		// Hold every rejection until all n requests were sent with the
		// old token, so that they all come back stale together.
		if rejected.Add(1) == n {
			close(allIn)
		}
		<-allIn
	}
	f := &fakeRefresher{}
	c := &http.Client{Transport: &Transport{Source: newSourceFor(t, initial(time.Now(), time.Hour), f)}}

	var wg sync.WaitGroup
	var ok atomic.Int32
	for range n {
		wg.Go(func() {
			resp, err := c.Get(u.srv.URL)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if got := f.calls.Load(); got != 1 {
		t.Errorf("%d refreshes for %d concurrent 401s, want 1", got, n)
	}
	if got := ok.Load(); got != n {
		t.Errorf("%d of %d requests succeeded after the replay", got, n)
	}
}

// A body that cannot be replayed is not retried: the 401 comes back intact.
func TestTransportUnreplayableBody(t *testing.T) {
	u := newUpstream(t, acceptOnly("Bearer fake-access-1"))
	f := &fakeRefresher{}
	c := &http.Client{Transport: &Transport{Source: newSourceFor(t, initial(time.Now(), time.Hour), f)}}

	req, _ := http.NewRequest(http.MethodPost, u.srv.URL, io.MultiReader(strings.NewReader("payload")))
	if req.GetBody != nil {
		t.Fatal("test setup: request is replayable")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || string(got) != "token rejected" {
		t.Errorf("got status %d, body intact %v (err %v); want the upstream's 401 untouched",
			resp.StatusCode, string(got) == "token rejected", err)
	}
	if n := f.calls.Load(); n != 0 {
		t.Errorf("%d refreshes for a request that cannot be replayed", n)
	}
	if n := len(u.requests()); n != 1 {
		t.Errorf("upstream saw %d requests, want 1", n)
	}
}

// A replay that is rejected again is returned as is: no second refresh, no
// loop.
func TestTransportReplayRejected(t *testing.T) {
	u := newUpstream(t, func(string) bool { return false })
	f := &fakeRefresher{}
	c := &http.Client{Transport: &Transport{Source: newSourceFor(t, initial(time.Now(), time.Hour), f)}}

	resp, err := c.Get(u.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || string(got) != "token rejected" {
		t.Errorf("status %d, want the replay's 401 with its body", resp.StatusCode)
	}
	if n := f.calls.Load(); n != 1 {
		t.Errorf("%d refreshes, want 1", n)
	}
	if n := len(u.requests()); n != 2 {
		t.Errorf("upstream saw %d requests, want 2", n)
	}
}

// A failed refresh is an error that tells reauth from a hiccup, and the
// rejected response is closed.
func TestTransportRefreshFailure(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantReauth bool
	}{
		{"terminal", errTerminal, true},
		{"transient", errTransient, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := newUpstream(t, func(string) bool { return false })
			f := &fakeRefresher{fn: failWith(tt.err)}
			ct := &countingTransport{base: http.DefaultTransport}
			c := &http.Client{Transport: &Transport{Source: newSourceFor(t, initial(time.Now(), time.Hour), f), Base: ct}}

			resp, err := c.Get(u.srv.URL)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("status %d, want an error", resp.StatusCode)
			}
			if errors.Is(err, oauth.ErrReauthRequired) != tt.wantReauth {
				t.Errorf("errors.Is(err, ErrReauthRequired) = %v, want %v (err %v)", !tt.wantReauth, tt.wantReauth, err)
			}
			var oe *oauth.Error
			if !errors.As(err, &oe) || oe != tt.err {
				t.Errorf("err does not wrap the Refresher's *oauth.Error: %v", err)
			}
			if ct.resps.Load() != 1 || ct.closed.Load() != 1 {
				t.Errorf("%d responses, %d closed; want the rejected one closed", ct.resps.Load(), ct.closed.Load())
			}
		})
	}
}

func TestTransportRefreshOn(t *testing.T) {
	tests := []struct {
		name        string
		refreshOn   []int
		status      int
		wantRefresh bool
	}{
		{"default 401", nil, http.StatusUnauthorized, true},
		{"default ignores 403", nil, http.StatusForbidden, false},
		{"401 and 403: 403", []int{401, 403}, http.StatusForbidden, true},
		{"401 and 403: 401", []int{401, 403}, http.StatusUnauthorized, true},
		{"403 only: 401", []int{403}, http.StatusUnauthorized, false},
		{"disabled", []int{}, http.StatusUnauthorized, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := newUpstream(t, acceptOnly("Bearer fake-access-1"))
			u.rejectStatus = tt.status
			f := &fakeRefresher{}
			c := &http.Client{Transport: &Transport{
				Source:    newSourceFor(t, initial(time.Now(), time.Hour), f),
				RefreshOn: tt.refreshOn,
			}}
			resp, err := c.Get(u.srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			wantStatus := map[bool]int{true: http.StatusOK, false: tt.status}[tt.wantRefresh]
			if (f.calls.Load() == 1) != tt.wantRefresh || resp.StatusCode != wantStatus {
				t.Errorf("refreshes %d, status %d; want refresh %v and status %d",
					f.calls.Load(), resp.StatusCode, tt.wantRefresh, wantStatus)
			}
		})
	}
}

// staticSource is a Source that is not a *TokenSource.
type staticSource struct {
	tok, next *oauth.Token
	err       error
	refreshes atomic.Int32
}

func (s *staticSource) Token(context.Context) (*oauth.Token, error) { return s.tok, s.err }
func (s *staticSource) Refresh(context.Context, *oauth.Token) (*oauth.Token, error) {
	s.refreshes.Add(1)
	return s.next, s.err
}

func TestTransportOtherSource(t *testing.T) {
	u := newUpstream(t, acceptOnly("Bearer fake-access-1"))
	src := &staticSource{
		tok:  &oauth.Token{AccessToken: "fake-access-0"},
		next: &oauth.Token{AccessToken: "fake-access-1", TokenType: "bearer"},
	}
	c := &http.Client{Transport: &Transport{Source: src}}
	resp, err := c.Get(u.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || src.refreshes.Load() != 1 {
		t.Errorf("status %d after %d refreshes, want 200 after 1", resp.StatusCode, src.refreshes.Load())
	}
}

// Every path closes the request body exactly once (RoundTripper contract)
// and every response body that is not returned.
func TestTransportClosesBodies(t *testing.T) {
	tests := []struct {
		name      string
		transport func(t *testing.T, base http.RoundTripper) *Transport
		accept    func(string) bool
		wantErr   bool
		// request bodies: the original plus one per GetBody call
		wantReqBodies  int32
		wantRespClosed int32 // by the Transport, before returning
	}{
		{"no source", func(t *testing.T, base http.RoundTripper) *Transport {
			return &Transport{Base: base}
		}, nil, true, 1, 0},
		{"source error", func(t *testing.T, base http.RoundTripper) *Transport {
			return &Transport{Source: &staticSource{err: errTerminal}, Base: base}
		}, nil, true, 1, 0},
		{"source returns no token", func(t *testing.T, base http.RoundTripper) *Transport {
			return &Transport{Source: &staticSource{tok: &oauth.Token{}}, Base: base}
		}, nil, true, 1, 0},
		{"success", func(t *testing.T, base http.RoundTripper) *Transport {
			return &Transport{Source: newSourceFor(t, initial(time.Now(), time.Hour), &fakeRefresher{}), Base: base}
		}, acceptOnly("Bearer fake-access-0"), false, 1, 0},
		{"replay", func(t *testing.T, base http.RoundTripper) *Transport {
			return &Transport{Source: newSourceFor(t, initial(time.Now(), time.Hour), &fakeRefresher{}), Base: base}
		}, acceptOnly("Bearer fake-access-1"), false, 2, 1},
		{"refresh fails", func(t *testing.T, base http.RoundTripper) *Transport {
			return &Transport{Source: newSourceFor(t, initial(time.Now(), time.Hour), &fakeRefresher{fn: failWith(errTerminal)}), Base: base}
		}, acceptOnly("Bearer fake-access-1"), true, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			accept := tt.accept
			if accept == nil {
				accept = func(string) bool { return true }
			}
			u := newUpstream(t, accept)
			ct := &countingTransport{base: http.DefaultTransport}
			tr := tt.transport(t, ct)

			var reqClosed, reqBodies atomic.Int32
			req, _ := http.NewRequest(http.MethodPost, u.srv.URL, nil)
			req.GetBody = func() (io.ReadCloser, error) {
				reqBodies.Add(1)
				return countingBody{strings.NewReader("payload"), &reqClosed}, nil
			}
			req.Body, _ = req.GetBody()
			req.ContentLength = int64(len("payload"))

			resp, err := tr.RoundTrip(req)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if resp != nil {
				resp.Body.Close() // the caller's close, not counted below
				ct.closed.Add(-1)
			}
			if len(u.requests()) == 0 {
				// Nothing was sent: the Transport itself must have closed
				// the body before returning.
				if reqClosed.Load() != 1 {
					t.Errorf("request body closed %d times before sending, want 1", reqClosed.Load())
				}
			} else {
				// http.Transport closes request bodies asynchronously
				// after writing them.
				waitFor(t, func() bool { return reqClosed.Load() == reqBodies.Load() })
			}
			if got := reqBodies.Load(); got != tt.wantReqBodies {
				t.Errorf("%d request bodies made, want %d", got, tt.wantReqBodies)
			}
			if got := ct.closed.Load(); got != tt.wantRespClosed {
				t.Errorf("the Transport closed %d responses, want %d", got, tt.wantRespClosed)
			}
		})
	}
}

// waitFor polls cond for the asynchronous closes of net/http. A body never
// closed fails the test through go test's -timeout, not a wall-clock
// threshold of ours.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for !cond() {
		time.Sleep(time.Millisecond)
	}
}
