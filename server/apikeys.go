package server

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

// KeyAdmin manages API keys for the /v1/api-keys routes. Every
// store.Backend satisfies it.
type KeyAdmin interface {
	CreateAPIKey(ctx context.Context, k store.APIKey) error
	ListAPIKeys(ctx context.Context) ([]store.APIKey, error)
	// RevokeAPIKey returns store.ErrNotFound for an unknown id.
	RevokeAPIKey(ctx context.Context, id string) error
	// DeleteKeyUISessions ends the dashboard sessions of a key.
	DeleteKeyUISessions(ctx context.Context, keyID string) (int64, error)
}

// Audit actions of key management.
const (
	ActionKeyCreate = "apikey.create"
	ActionKeyRevoke = "apikey.revoke"
)

// apiKeyRequest is the body of POST /v1/api-keys.
type apiKeyRequest struct {
	Name        string   `json:"name"`
	Scope       string   `json:"scope"`
	Connections []string `json:"connections"`
	Providers   []string `json:"providers"`
}

// apiKeyView is a key as the API shows it: never its hash.
type apiKeyView struct {
	ID          string     `json:"id"`
	Name        string     `json:"name"`
	Scope       string     `json:"scope"`
	Connections []string   `json:"connections"`
	Providers   []string   `json:"providers"`
	CreatedAt   time.Time  `json:"created_at"`
	RevokedAt   *time.Time `json:"revoked_at,omitempty"`
	// Key is the secret, in the answer to its creation only.
	Key string `json:"key,omitempty"`
}

func newKeyView(k store.APIKey) apiKeyView {
	v := apiKeyView{ID: k.ID, Name: k.Name, Scope: k.Scope, Connections: k.Connections, Providers: k.Providers, CreatedAt: k.CreatedAt.UTC()}
	if v.Connections == nil {
		v.Connections = []string{}
	}
	if v.Providers == nil {
		v.Providers = []string{}
	}
	if !k.RevokedAt.IsZero() {
		t := k.RevokedAt.UTC()
		v.RevokedAt = &t
	}
	return v
}

func (s *Server) keyAdminOr404(w http.ResponseWriter, r *http.Request) bool {
	if s.keyAdmin == nil {
		s.writeError(w, r, apiError{status: http.StatusNotFound, code: codeNotFound, message: "key management is not enabled"})
		return false
	}
	return true
}

// createAPIKey answers POST /v1/api-keys with the new key's secret, shown
// this once.
func (s *Server) createAPIKey(w http.ResponseWriter, r *http.Request) {
	if !s.keyAdminOr404(w, r) {
		return
	}
	var req apiKeyRequest
	if e, ok := s.decodeJSON(w, r, &req); !ok {
		s.writeError(w, r, e)
		return
	}
	if strings.TrimSpace(req.Name) == "" {
		s.writeError(w, r, invalid("name: is required (say who uses the key)"))
		return
	}
	secret, key, err := NewAPIKey(KeySpec{Name: req.Name, Role: req.Scope, Connections: req.Connections, Providers: req.Providers}, s.now())
	if err != nil {
		s.writeError(w, r, invalid(strings.TrimPrefix(err.Error(), "server: ")))
		return
	}
	if err := s.keyAdmin.CreateAPIKey(r.Context(), key); err != nil {
		s.fail(w, r, err)
		return
	}
	info(r.Context()).auditDetail = keyDetail(key)
	v := newKeyView(key)
	v.Key = secret
	w.Header().Set("Cache-Control", "no-store")
	s.writeJSON(w, r, http.StatusCreated, v)
}

// keyDetail describes a key for the audit trail: never its secret.
func keyDetail(k store.APIKey) string {
	d := "key=" + k.ID + " role=" + k.Scope
	if len(k.Connections) > 0 {
		d += " connections=" + strings.Join(k.Connections, ",")
	}
	if len(k.Providers) > 0 {
		d += " providers=" + strings.Join(k.Providers, ",")
	}
	if len(d) > 1000 {
		d = d[:1000]
	}
	return d
}

func (s *Server) listAPIKeys(w http.ResponseWriter, r *http.Request) {
	if !s.keyAdminOr404(w, r) {
		return
	}
	keys, err := s.keyAdmin.ListAPIKeys(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := struct {
		Keys []apiKeyView `json:"keys"`
	}{Keys: make([]apiKeyView, 0, len(keys))}
	for _, k := range keys {
		out.Keys = append(out.Keys, newKeyView(k))
	}
	s.writeJSON(w, r, http.StatusOK, out)
}

// revokeAPIKey revokes a key, ends its dashboard sessions and forgets it
// here at once; other replicas hear of it through the store's key feed.
func (s *Server) revokeAPIKey(w http.ResponseWriter, r *http.Request) {
	if !s.keyAdminOr404(w, r) {
		return
	}
	id := r.PathValue("key")
	info(r.Context()).auditDetail = "key=" + truncateID(id)
	err := s.keyAdmin.RevokeAPIKey(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		s.writeError(w, r, apiError{status: http.StatusNotFound, code: codeNotFound, message: "API key not found"})
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.ForgetKeys()
	if _, err := s.keyAdmin.DeleteKeyUISessions(r.Context(), id); err != nil {
		// The key is revoked; its sessions fail their key check anyway.
		s.log.WarnContext(r.Context(), "could not end the revoked key's dashboard sessions", "key", id, "error", err)
	}
	w.WriteHeader(http.StatusNoContent)
}

func truncateID(id string) string {
	if len(id) > 100 {
		return id[:100]
	}
	return id
}
