package authztest

import (
	"net/url"
	"sync"
)

// formLog keeps the form parameters of refresh requests, without their
// secrets, so tests can check what a client sent (resource, scope).
type formLog struct {
	mu    sync.Mutex
	forms []url.Values
}

// secretParams are left out of recorded forms.
var secretParams = []string{"refresh_token", "client_secret", "code", "code_verifier"}

func (l *formLog) add(form url.Values) {
	c := make(url.Values, len(form))
	for k, vs := range form {
		c[k] = append([]string(nil), vs...)
	}
	for _, k := range secretParams {
		delete(c, k)
	}
	l.mu.Lock()
	l.forms = append(l.forms, c)
	l.mu.Unlock()
}

// RefreshForms returns the form parameters of every refresh request so far
// (grant_type=refresh_token), in order, without the refresh token and the
// client secret.
func (s *Server) RefreshForms() []url.Values {
	s.refreshForms.mu.Lock()
	defer s.refreshForms.mu.Unlock()
	return append([]url.Values(nil), s.refreshForms.forms...)
}
