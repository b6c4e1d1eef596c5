package cluster

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/authztest"
)

// TestCrashMidRefresh kills a replica (SIGKILL) while it holds a
// connection's refresh lease and waits for the provider's answer, after the
// provider has already rotated the refresh token. Before sending the token
// the dead replica marked the refresh as started. Another replica must not
// call the provider while the dead one's lease is live, then takes over and
// finds the mark; what it does depends on the provider's rotation:
//
//   - strict rotation: sending the token again may be the double spend
//     that revokes the grant, so it does not; the connection is honestly
//     marked needs_reauth with refresh_outcome_unknown by one failure
//     write, its stored tokens untouched, and the provider sees no reuse;
//   - a reuse grace window (still open): the replay gets a fresh pair and
//     the connection carries on.
func TestCrashMidRefresh(t *testing.T) {
	tests := []struct {
		name           string
		grace          time.Duration
		rotation       string // the provider profile's rotation
		wantCalls      int64  // refresh requests the provider sees in all
		wantWrites     int64  // rows written after A's mark: B's mark, B's answer or failure
		wantStatus     int    // of B's GET …/token
		wantCode       string // API error code of that answer, if any
		wantConnStatus string
		wantFailure    string // failure code afterwards, "" for none
		wantReuse      int64  // reuses the provider detected (grant revoked)
		wantGrace      int64  // replays inside the grace window
	}{
		{
			name: "strict provider", rotation: "rotate", wantStatus: http.StatusConflict, wantCode: "reauth_required",
			wantConnStatus: "needs_reauth", wantFailure: "refresh_outcome_unknown", wantCalls: 1, wantWrites: 1,
		},
		{
			name: "provider with reuse grace", grace: time.Minute, rotation: "rotate_grace", wantStatus: http.StatusOK,
			wantConnStatus: "active", wantGrace: 1, wantCalls: 2, wantWrites: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			authz := authztest.New(t, authztest.Options{ReuseGrace: tc.grace})
			// A short lease so that the test waits little for it to lapse;
			// the provider's delay far longer than the refresh timeout (which
			// the lease must exceed), so that A is still waiting for the
			// answer when it is killed, moments after the provider got it.
			opts := clusterOptions{replicas: 2, leaseTTL: "2s", refreshTimeout: "1500ms", noScheduler: true, rotation: tc.rotation}
			if tc.grace > 0 {
				opts.rotationGrace = tc.grace.String()
			}
			c := newCluster(t, authz, opts)
			a, b := c.replicas[0], c.replicas[1]
			const id = "crash"
			access, refresh, _ := authz.IssueTokens(t, "offline")
			v0 := c.importExpired(b, id, access, refresh)
			imported := c.row(id)

			// The provider processes A's refresh (rotating the refresh
			// token) and then sits on the answer.
			authz.SetTokenDelay(10 * time.Second)
			aDone := make(chan answer, 1)
			aErr := make(chan error, 1)
			go func() {
				ans, err := c.send(t.Context(), a, http.MethodGet, "/v1/connections/"+id+"/token", nil)
				aDone <- ans
				aErr <- err
			}()
			if !poll(1000, 10*time.Millisecond, func() bool { return authz.RefreshCalls() >= 1 }) {
				t.Fatal("replica A's refresh never reached the provider")
			}
			held := c.row(id)
			if held.leaseOwner == nil || *held.leaseOwner == "" || held.leaseUntil == nil {
				t.Fatal("while A waits for the provider, the row shows no lease owner")
			}
			owner := *held.leaseOwner

			a.kill()
			select {
			case ans := <-aDone:
				if err := <-aErr; err == nil {
					t.Fatalf("replica A answered %d although it was killed mid-refresh", ans.status)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the request to the killed replica never ended")
			}
			// The provider has processed A's request whatever became of
			// the answer: the access token it replaced is gone.
			if !poll(500, 10*time.Millisecond, func() bool { return !authz.Active(t, access) }) {
				t.Fatal("the provider never processed A's refresh")
			}
			authz.SetTokenDelay(0)

			orphan := c.row(id)
			if orphan.leaseOwner == nil || *orphan.leaseOwner != owner || orphan.leaseUntil == nil {
				t.Fatal("the dead replica's lease is not in the row after the kill")
			}
			leaseUntil := *orphan.leaseUntil
			if orphan.version != v0+1 || !orphan.refreshStarted {
				t.Fatalf("version %d, refresh marked started %v after A's crash; want %d, true: A marks the refresh before sending the token, and writes nothing else without an answer",
					orphan.version, orphan.refreshStarted, v0+1)
			}

			// B asks while A's lease is live. Watch the provider meanwhile:
			// a second refresh request seen before the lease lapsed is a
			// double spend.
			bDone := make(chan struct{})
			var bAns answer
			var bErr error
			go func() {
				defer close(bDone)
				bAns, bErr = c.send(t.Context(), b, http.MethodGet, "/v1/connections/"+id+"/token", nil)
			}()
			waitedLive, violated := false, false
		watch:
			for {
				select {
				case <-bDone:
					break watch
				case <-time.After(5 * time.Millisecond):
				}
				n := authz.RefreshCalls()
				seenAt := time.Now() // after the read: the call came before this
				if seenAt.Before(leaseUntil) {
					if n > 1 {
						t.Error("replica B called the provider while A's lease was live")
						violated = true
						break watch
					}
					waitedLive = true
				}
			}
			<-bDone
			if !waitedLive && !violated {
				t.Log("the lease had lapsed before B was first watched; the no-call-while-live check had nothing to see")
			}
			if bErr != nil {
				t.Fatalf("GET token on B: %v", bErr)
			}
			if bAns.status != tc.wantStatus || bAns.errorCode() != tc.wantCode {
				t.Errorf("GET token on B: %d %q, want %d %q", bAns.status, bAns.errorCode(), tc.wantStatus, tc.wantCode)
			}
			if got := authz.RefreshCalls(); got != tc.wantCalls {
				t.Errorf("the provider saw %d refresh requests, want %d", got, tc.wantCalls)
			}
			if got := authz.ReuseDetected(); got != tc.wantReuse {
				t.Errorf("provider detected %d reuses, want %d", got, tc.wantReuse)
			}
			if got := authz.GraceReuses(); got != tc.wantGrace {
				t.Errorf("provider saw %d replays in its grace window, want %d", got, tc.wantGrace)
			}

			v := c.connection(b, id)
			gotFailure := ""
			if v.Failure != nil {
				gotFailure = v.Failure.Code
			}
			if v.Status != tc.wantConnStatus || gotFailure != tc.wantFailure {
				t.Errorf("connection: status %q, failure %q; want %q, %q", v.Status, gotFailure, tc.wantConnStatus, tc.wantFailure)
			}
			after := c.row(id)
			if after.status != tc.wantConnStatus || after.hasFailure != (tc.wantFailure != "") {
				t.Errorf("row: status %q, failure recorded %v; want %q, %v", after.status, after.hasFailure, tc.wantConnStatus, tc.wantFailure != "")
			}
			if after.leaseOwner != nil && !time.Now().After(*after.leaseUntil) {
				t.Error("the lease is still held after B's answer")
			}
			// After A's mark: B's failure record, or B's own mark and saved
			// token; the crashed refresh wrote nothing more.
			if after.version != v0+1+tc.wantWrites || after.refreshStarted {
				t.Errorf("version %d, refresh still marked %v; want %d, false", after.version, after.refreshStarted, v0+1+tc.wantWrites)
			}
			tokensKept := bytes.Equal(after.access, imported.access) && bytes.Equal(after.refresh, imported.refresh)

			if tc.wantStatus == http.StatusOK {
				tok := bAns.accessToken()
				if tok == "" || tok == access || !authz.Active(t, tok) {
					t.Errorf("B's token: empty %v, the expired one %v; want a fresh token active at the provider", tok == "", tok == access)
				}
				if tokensKept {
					t.Error("B's fresh pair was not saved")
				}
				c.assertNoSecretsLogged(access, refresh, tok)
				return
			}
			if !tokensKept {
				t.Error("the failed takeover changed the stored tokens")
			}
			// Marked, the connection no longer reaches the provider.
			again := c.call(b, http.MethodGet, "/v1/connections/"+id+"/token", nil)
			if again.status != http.StatusConflict || again.errorCode() != "reauth_required" {
				t.Errorf("GET token again: %d %q, want 409 reauth_required", again.status, again.errorCode())
			}
			if got := authz.RefreshCalls(); got != tc.wantCalls {
				t.Errorf("a needs_reauth connection was refreshed again (%d refresh requests)", got)
			}
			c.assertNoSecretsLogged(access, refresh)
		})
	}
}
