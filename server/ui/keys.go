package ui

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

// KeyAdmin manages API keys for the dashboard's keys page. Every
// store.Backend satisfies it.
type KeyAdmin interface {
	CreateAPIKey(ctx context.Context, k store.APIKey) error
	RevokeAPIKey(ctx context.Context, id string) error
	DeleteKeyUISessions(ctx context.Context, keyID string) (int64, error)
}

// KeyMaker makes a new key's secret and record from a role and a
// connection scope, validating them; server.NewAPIKey behind an adapter
// (the dashboard cannot import the server package, which serves it).
type KeyMaker func(name, role string, connections, providers []string, now time.Time) (secret string, key store.APIKey, err error)

// keyRoles are offered by the create form; the maker validates.
var keyRoles = []string{"proxy", "tokens", "connect", "admin"}

type keyRow struct {
	ID, Name, Role         string
	Connections, Providers string
	Created, RevokedAt     when
	Revoked                bool
}

type keysData struct {
	Keys       []keyRow
	Roles      []string
	CanCreate  bool
	NewKey     string
	NewKeyName string
}

func (h *Handler) keysPage(w http.ResponseWriter, r *http.Request, status int, flashes []flash, newKey, newName string) {
	keys, err := h.keys.ListAPIKeys(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := keysData{Roles: keyRoles, CanCreate: h.keyAdmin != nil && h.makeKey != nil, NewKey: newKey, NewKeyName: newName}
	for _, k := range keys {
		d.Keys = append(d.Keys, keyRow{
			ID: k.ID, Name: k.Name, Role: k.Scope,
			Connections: strings.Join(k.Connections, ", "), Providers: strings.Join(k.Providers, ", "),
			Created: h.when(k.CreatedAt), RevokedAt: h.when(k.RevokedAt), Revoked: !k.RevokedAt.IsZero(),
		})
	}
	h.render(w, r, status, "keys", page{Title: "API keys", Flashes: flashes, Data: d})
}

func (h *Handler) listKeys(w http.ResponseWriter, r *http.Request) {
	var flashes []flash
	if r.URL.Query().Get("ok") == "revoked" {
		flashes = append(flashes, flash{Kind: "ok", Text: "Key revoked; its dashboard sessions ended."})
	}
	h.keysPage(w, r, http.StatusOK, flashes, "", "")
}

// splitField splits a comma-separated form field.
func splitField(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// createKey makes a key and shows its secret on the page rendered in
// answer, never in a URL.
func (h *Handler) createKey(w http.ResponseWriter, r *http.Request) {
	if h.keyAdmin == nil || h.makeKey == nil {
		h.renderError(w, r, http.StatusNotFound, "Keys cannot be created from this dashboard.")
		return
	}
	name := strings.TrimSpace(r.PostFormValue("name"))
	if name == "" {
		h.keysPage(w, r, http.StatusBadRequest, []flash{{Kind: "error", Text: "Give the key a name that says who uses it."}}, "", "")
		return
	}
	secret, key, err := h.makeKey(name, r.PostFormValue("role"), splitField(r.PostFormValue("connections")), splitField(r.PostFormValue("providers")), h.now())
	if err != nil {
		h.keysPage(w, r, http.StatusBadRequest, []flash{{Kind: "error", Text: strings.TrimPrefix(err.Error(), "server: ")}}, "", "")
		return
	}
	if err := h.keyAdmin.CreateAPIKey(r.Context(), key); err != nil {
		h.fail(w, r, err)
		return
	}
	detail := "key=" + key.ID + " role=" + key.Scope
	if len(key.Connections) > 0 {
		detail += " connections=" + strings.Join(key.Connections, ",")
	}
	if len(key.Providers) > 0 {
		detail += " providers=" + strings.Join(key.Providers, ",")
	}
	h.record(r, "", "apikey.create", truncate(detail, 1000), "ok")
	h.keysPage(w, r, http.StatusCreated, nil, secret, key.Name)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// revokeKey revokes a key and ends its sessions (the operator's own, if it
// is the key they signed in with).
func (h *Handler) revokeKey(w http.ResponseWriter, r *http.Request) {
	if h.keyAdmin == nil {
		h.renderError(w, r, http.StatusNotFound, "Keys cannot be revoked from this dashboard.")
		return
	}
	id := r.PathValue("id")
	err := h.keyAdmin.RevokeAPIKey(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		h.renderError(w, r, http.StatusNotFound, "There is no such key.")
		return
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if h.keyRevoked != nil {
		h.keyRevoked()
	}
	if _, err := h.keyAdmin.DeleteKeyUISessions(r.Context(), id); err != nil {
		h.log.WarnContext(r.Context(), "dashboard: could not end the revoked key's sessions", "key", id, "error", err)
	}
	h.record(r, "", "apikey.revoke", "key="+truncate(id, 100), "ok")
	http.Redirect(w, r, "/ui/keys?ok=revoked", http.StatusSeeOther)
}
