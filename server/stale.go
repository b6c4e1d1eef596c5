package server

import (
	"net/http"
	"time"
)

// staleReport is the body of POST /v1/connections/{id}/token.
type staleReport struct {
	StaleToken string `json:"stale_token"`
}

// reportStale answers a caller whose API rejected the token it was handed:
// the broker refreshes once if that token is still the current one
// (lifecycle.Rejected; docs/architecture.md, "Whether the current token
// answers a request"), and either way the caller gets a valid token. It is
// how the Go library's server-backed source (client/remote) shares one
// refresh among every replica of a program.
func (s *Server) reportStale(w http.ResponseWriter, r *http.Request) {
	var in staleReport
	if e, ok := s.decodeJSON(w, r, &in); !ok {
		s.writeError(w, r, e)
		return
	}
	if in.StaleToken == "" {
		s.writeError(w, r, invalid("stale_token: required; send the access token the API rejected"))
		return
	}
	t, err := s.broker.RefreshConnection(r.Context(), r.PathValue("id"), &in.StaleToken)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := tokenView{AccessToken: t.AccessToken, TokenType: t.TokenType, ExpiresAt: timeOrNil(t.ExpiresAt)}
	if !t.ExpiresAt.IsZero() {
		secs := max(int64(t.ExpiresAt.Sub(s.now())/time.Second), 0)
		out.ExpiresIn = &secs
	}
	s.writeJSON(w, r, http.StatusOK, out)
}
