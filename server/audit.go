package server

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

// Audit actions the API records (docs/security.md lists them all).
const (
	ActionTokenRead      = "token.read"
	ActionProxy          = "proxy"
	ActionRefresh        = "refresh"
	ActionImport         = "connection.import"
	ActionReimport       = "connection.reimport"
	ActionDelete         = "connection.delete"
	ActionConnectSession = "connect.session"
	ActionConnect        = "connect"
)

// ActorConnectLink is the actor of a connect callback: the person holding
// the link, who has no key.
const ActorConnectLink = "connect-link"

// Auditor takes audit entries. Record must not block on I/O: it is called
// on the request path (package audit batches the writes).
type Auditor interface {
	Record(e store.AuditEntry)
}

// AuditReader answers GET /v1/audit. Every store.Store satisfies it.
type AuditReader interface {
	ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEntry, error)
}

type noAudit struct{}

func (noAudit) Record(store.AuditEntry) {}

// recordAudit writes the audit entry of an answered request whose route
// has an action. Requests refused before a key was recognised are not
// recorded (they have no actor, and would let strangers fill the log).
func (s *Server) recordAudit(ri *requestInfo, method string, status int) {
	if ri.audit == "" {
		return
	}
	e := store.AuditEntry{
		Time:         s.now(),
		Action:       ri.audit,
		ConnectionID: ri.connection,
		Detail:       ri.auditDetail,
	}
	switch {
	case ri.key != "":
		e.Actor, e.ActorID = ri.keyName, ri.key
		if e.Actor == "" {
			e.Actor = "key:" + ri.key
		}
	case ri.audit == ActionConnect && ri.connection != "":
		e.Actor = ActorConnectLink
	default:
		return
	}
	switch {
	case ri.errCode != "":
		e.Outcome = ri.errCode
	case status >= 400:
		e.Outcome = "http_" + strconv.Itoa(status)
	default:
		e.Outcome = "ok"
	}
	if ri.audit == ActionProxy {
		// The method and the provider's status; never the path or the
		// query, which may carry identifiers or secrets of the caller.
		e.Detail = method + " " + patternProxy + " " + strconv.Itoa(status)
	}
	s.audit.Record(e)
}

// auditEntryView is one entry of GET /v1/audit.
type auditEntryView struct {
	ID           int64     `json:"id"`
	Time         time.Time `json:"time"`
	Actor        string    `json:"actor"`
	ActorID      string    `json:"actor_id,omitempty"`
	Action       string    `json:"action"`
	ConnectionID string    `json:"connection_id,omitempty"`
	Outcome      string    `json:"outcome"`
	Detail       string    `json:"detail,omitempty"`
}

type auditPage struct {
	Entries []auditEntryView `json:"entries"`
	// NextBefore, when set, is the before= of the next (older) page.
	NextBefore int64 `json:"next_before,omitempty"`
}

// listAudit answers GET /v1/audit?connection_id=&actor=&action=&since=&until=&before=&limit=,
// newest first. Entries are written in batches, so one appears within
// about a second (audit.Options.FlushInterval) of its request.
func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) {
	if s.auditReader == nil {
		s.writeError(w, r, apiError{status: http.StatusNotFound, code: codeNotFound, message: "the audit log is not enabled"})
		return
	}
	f, err := parseAuditFilter(r.URL.Query())
	if err != nil {
		s.writeError(w, r, invalid(err.Error()))
		return
	}
	entries, err := s.auditReader.ListAudit(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	page := auditPage{Entries: make([]auditEntryView, 0, len(entries))}
	for _, e := range entries {
		page.Entries = append(page.Entries, auditEntryView{
			ID: e.ID, Time: e.Time.UTC(), Actor: e.Actor, ActorID: e.ActorID, Action: e.Action,
			ConnectionID: e.ConnectionID, Outcome: e.Outcome, Detail: e.Detail,
		})
	}
	limit, _ := store.AuditLimit(f.Limit)
	if len(entries) == limit && len(entries) > 0 {
		page.NextBefore = entries[len(entries)-1].ID
	}
	s.writeJSON(w, r, http.StatusOK, page)
}

// parseAuditFilter reads GET /v1/audit's query.
func parseAuditFilter(q url.Values) (store.AuditFilter, error) {
	f := store.AuditFilter{
		ConnectionID: q.Get("connection_id"),
		Actor:        q.Get("actor"),
		Action:       q.Get("action"),
	}
	for name, dst := range map[string]*time.Time{"since": &f.Since, "until": &f.Until} {
		if v := q.Get(name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return f, &fieldError{name, "must be an RFC 3339 time such as 2030-01-02T15:04:05Z"}
			}
			*dst = t
		}
	}
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return f, &fieldError{"before", "must be a positive entry id"}
		}
		f.BeforeID = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return f, &fieldError{"limit", "must be a number"}
		}
		if _, err := store.AuditLimit(n); err != nil || n == 0 {
			return f, &fieldError{"limit", "must be between 1 and " + strconv.Itoa(store.MaxAuditLimit)}
		}
		f.Limit = n
	}
	return f, nil
}

type fieldError struct{ field, msg string }

func (e *fieldError) Error() string { return e.field + ": " + e.msg }
