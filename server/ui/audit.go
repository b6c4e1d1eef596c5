package ui

import (
	"net/http"

	"github.com/tokenbroker/tokenbroker/store"
)

// actorPrefix marks audit entries of dashboard sessions, so they can be
// told from the API calls of the same key.
const actorPrefix = "dashboard:"

// auditShown is how many audit entries a connection's page lists.
const auditShown = 20

type noAudit struct{}

func (noAudit) Record(store.AuditEntry) {}

// record writes an audit entry for the signed-in operator of r, if any.
func (h *Handler) record(r *http.Request, connectionID, action, detail, outcome string) {
	e := store.AuditEntry{Time: h.now(), Action: action, ConnectionID: connectionID, Detail: detail, Outcome: outcome}
	if s := sessionFrom(r); s != nil {
		e.Actor, e.ActorID = actorPrefix+s.KeyName, s.KeyID
	} else {
		e.Actor = actorPrefix + "(not signed in)"
	}
	h.audit.Record(e)
}

// auditView is one audit entry on a connection's page.
type auditView struct {
	At      when
	Actor   string
	Action  string
	Outcome string
	Detail  string
}

// connectionAudit reads the newest audit entries of a connection.
func (h *Handler) connectionAudit(r *http.Request, id string) (views []auditView, enabled, failed bool) {
	if h.auditReader == nil {
		return nil, false, false
	}
	entries, err := h.auditReader.ListAudit(r.Context(), store.AuditFilter{ConnectionID: id, Limit: auditShown})
	if err != nil {
		h.log.WarnContext(r.Context(), "dashboard: audit entries", "connection", id, "error", err)
		return nil, true, true
	}
	for _, e := range entries {
		views = append(views, auditView{At: h.when(e.Time), Actor: e.Actor, Action: e.Action, Outcome: e.Outcome, Detail: e.Detail})
	}
	return views, true, false
}
