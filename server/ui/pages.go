package ui

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/store"
)

// page is what every template gets.
type page struct {
	Title   string
	Session *session
	CSRF    string
	Flashes []flash
	Data    any
}

// flash is a banner at the top of a page.
type flash struct {
	Kind string // ok, warn, error
	Text string
	Code string // an error code to show with it
}

func (h *Handler) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	if s := sessionFrom(r); s != nil && p.Session == nil {
		p.Session, p.CSRF = s, csrfToken(s)
	}
	var buf bytes.Buffer
	if err := h.pages[name].ExecuteTemplate(&buf, "layout.html", p); err != nil {
		h.log.ErrorContext(r.Context(), "dashboard template failed", "page", name, "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
}

func (h *Handler) renderError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	h.render(w, r, status, "error", page{
		Title: http.StatusText(status),
		Data: struct {
			Status  int
			Message string
		}{status, msg},
	})
}

// --- sign-in ---

type signinData struct {
	Error     string
	Next      string
	SigninTok string
}

func (h *Handler) signinPage(w http.ResponseWriter, r *http.Request, status int, msg string) {
	tok, err := h.signinToken(w, r)
	if err != nil {
		h.log.ErrorContext(r.Context(), "dashboard sign-in token", "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	next := r.FormValue("next")
	if !safeNext(next) {
		next = ""
	}
	h.render(w, r, status, "signin", page{Title: "Sign in", Data: signinData{Error: msg, Next: next, SigninTok: tok}})
}

func (h *Handler) signin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if !sameOrigin(r) {
		h.signinPage(w, r, http.StatusForbidden, "This sign-in was not submitted from the dashboard (cross-origin request refused).")
		return
	}
	if !h.validSigninToken(r, r.PostFormValue(csrfField)) {
		h.signinPage(w, r, http.StatusForbidden, "The sign-in form expired. Try again.")
		return
	}
	k, err := h.checkAPIKey(r, r.PostFormValue("api_key"))
	var refused *errSignin
	if errors.As(err, &refused) {
		h.record(r, "", "dashboard.signin", "", "refused")
		h.signinPage(w, r, refused.status, refused.msg)
		return
	}
	if err != nil {
		h.log.ErrorContext(r.Context(), "dashboard sign-in failed", "error", err)
		h.signinPage(w, r, http.StatusServiceUnavailable, "The database could not be reached. Try again shortly.")
		return
	}
	exp := h.now().Add(h.ttl)
	value, err := h.newSession(r.Context(), k.ID, exp)
	if err != nil {
		h.log.ErrorContext(r.Context(), "dashboard session", "error", err)
		h.renderError(w, r, http.StatusInternalServerError, "The session could not be created.")
		return
	}
	h.setCookie(w, r, sessionCookie, value, exp, h.ttl)
	h.clearCookie(w, r, signinCookie)
	h.log.InfoContext(r.Context(), "dashboard sign-in", "key", k.ID)
	h.audit.Record(store.AuditEntry{Time: h.now(), Actor: actorPrefix + k.Name, ActorID: k.ID, Action: "dashboard.signin", Outcome: "ok"})
	next := r.PostFormValue("next")
	if !safeNext(next) {
		next = "/ui/"
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// signout ends the session server-side, so a copy of the cookie stops
// working too, and clears the cookie.
func (h *Handler) signout(w http.ResponseWriter, r *http.Request) {
	sess := sessionFrom(r)
	if err := h.keys.DeleteUISession(r.Context(), sess.id); err != nil {
		h.log.ErrorContext(r.Context(), "dashboard sign-out", "error", err)
		h.renderError(w, r, http.StatusServiceUnavailable, "The session could not be ended: the database could not be reached. Try again shortly.")
		return
	}
	h.record(r, "", "dashboard.signout", "", "ok")
	h.clearCookie(w, r, sessionCookie)
	http.Redirect(w, r, "/ui/signin", http.StatusSeeOther)
}

// --- views of a connection ---

// statusView is how a connection's health is shown.
type statusView struct {
	Label string
	Class string // ok, failing, reauth, revoked
	Hint  string
}

func statusOf(c *store.Connection) statusView {
	switch c.Status {
	case store.StatusRevoked:
		return statusView{"Revoked", "revoked", "The grant was revoked; the connection cannot be used."}
	case store.StatusNeedsReauth:
		return statusView{"Needs reauth", "reauth", "The provider refused the refresh; a person must reconnect."}
	}
	if c.Failure != nil {
		return statusView{"Failing", "failing", "The last refresh failed; the broker retries with backoff."}
	}
	return statusView{"Active", "ok", "Healthy."}
}

// when is a time as shown: absolute (UTC) and relative to now.
type when struct {
	Set  bool
	Abs  string // 2026-11-23 05:40:12 UTC
	ISO  string
	Rel  string // "in 42m", "3h ago"
	Past bool
	Soon bool // within the next 10 minutes
}

func (h *Handler) when(t time.Time) when {
	if t.IsZero() {
		return when{}
	}
	now := h.now()
	d := t.Sub(now)
	w := when{Set: true, Abs: t.UTC().Format("2006-01-02 15:04:05 UTC"), ISO: t.UTC().Format(time.RFC3339)}
	switch {
	case d < 0:
		w.Past, w.Rel = true, humanDuration(-d)+" ago"
	default:
		w.Rel = "in " + humanDuration(d)
		w.Soon = d < 10*time.Minute
	}
	return w
}

func humanDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		hrs, mins := int(d/time.Hour), int(d%time.Hour/time.Minute)
		if mins == 0 {
			return fmt.Sprintf("%dh", hrs)
		}
		return fmt.Sprintf("%dh %dm", hrs, mins)
	default:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	}
}

type row struct {
	ID               string
	Provider         string
	Status           statusView
	ExpiresAt        when
	ExpiryDefaulted  bool
	RefreshExpiresAt when
	// RefreshSoon: the refresh token or its chain ends within two weeks.
	RefreshSoon   bool
	LastRefreshAt when
	FailureCode   string
	Attempts      int
}

func (h *Handler) row(c *store.Connection) row {
	r := row{
		ID:               c.ID,
		Provider:         c.Provider,
		Status:           statusOf(c),
		ExpiresAt:        h.when(c.ExpiresAt),
		ExpiryDefaulted:  c.ExpiryDefaulted,
		RefreshExpiresAt: h.when(c.RefreshExpiresAt),
		RefreshSoon:      broker.RefreshExpiringSoon(c, h.now()),
		LastRefreshAt:    h.when(c.LastRefreshAt),
	}
	if f := c.Failure; f != nil {
		r.FailureCode, r.Attempts = f.Code, f.Attempts
	}
	return r
}

// --- list ---

type listData struct {
	Rows      []row
	Summary   []summaryChip
	Providers []string
	Statuses  []option
	Provider  string
	Status    string
	Filtered  bool
	After     string
	NextURL   string
	FirstURL  string
}

// statusFailing is the list filter for active connections whose last
// refresh failed; the store filters by status only, so they are found by
// scanning the active ones.
const statusFailing = "failing"

// failingScanPages bounds the store pages one list request reads looking
// for failing connections; the next page link continues the scan.
const failingScanPages = 20

func (h *Handler) listFailing(ctx context.Context, provider, after string) (store.Page, error) {
	var out store.Page
	for range failingScanPages {
		pg, err := h.broker.ListConnections(ctx, store.ListOptions{
			Provider: provider, Status: store.StatusActive, After: after, Limit: store.MaxListLimit,
		})
		if err != nil {
			return store.Page{}, err
		}
		for _, c := range pg.Connections {
			if c.Failure == nil {
				continue
			}
			out.Connections = append(out.Connections, c)
			if len(out.Connections) == h.pageSize {
				out.NextAfter = c.ID
				return out, nil
			}
		}
		if pg.NextAfter == "" {
			return out, nil
		}
		after = pg.NextAfter
	}
	out.NextAfter = after // scan budget spent: the next page goes on from here
	return out, nil
}

// summaryChip is one count above the list.
type summaryChip struct {
	Label, Class, Filter string
	Count                int
}

// summarize orders the counts for display.
func summarize(counts map[string]int) []summaryChip {
	total := 0
	for _, n := range counts {
		total += n
	}
	return []summaryChip{
		{"All", "all", "", total},
		{"Active", "ok", string(store.StatusActive), counts[string(store.StatusActive)]},
		{"Failing", "failing", statusFailing, counts[statusFailing]},
		{"Needs reauth", "reauth", string(store.StatusNeedsReauth), counts[string(store.StatusNeedsReauth)]},
		{"Revoked", "revoked", string(store.StatusRevoked), counts[string(store.StatusRevoked)]},
	}
}

type option struct {
	Value, Label string
	Selected     bool
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	provider, status, after := q.Get("provider"), q.Get("status"), q.Get("after")
	var flashes []flash
	if status != "" && status != statusFailing && !store.Status(status).Valid() {
		flashes = append(flashes, flash{Kind: "warn", Text: "Unknown status filter; showing every status."})
		status = ""
	}
	if len(provider) > 200 {
		provider = ""
	}
	if after != "" && !broker.ValidID(after) {
		after = ""
	}
	flashes = append(flashes, listFlashes(q)...)
	var pg store.Page
	var err error
	if status == statusFailing {
		pg, err = h.listFailing(r.Context(), provider, after)
	} else {
		pg, err = h.broker.ListConnections(r.Context(), store.ListOptions{
			Provider: provider, Status: store.Status(status), After: after, Limit: h.pageSize,
		})
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := listData{Provider: provider, Status: status, Filtered: provider != "" || status != "", After: after}
	for i := range pg.Connections {
		d.Rows = append(d.Rows, h.row(&pg.Connections[i]))
	}
	d.Providers = slices.Clone(h.providers)
	if provider != "" && !slices.Contains(d.Providers, provider) {
		d.Providers = append(d.Providers, provider)
	}
	slices.Sort(d.Providers)
	d.Statuses = []option{{"", "Any status", status == ""}}
	for _, o := range []option{
		{Value: string(store.StatusActive), Label: "Active (incl. failing)"},
		{Value: statusFailing, Label: "Failing"},
		{Value: string(store.StatusNeedsReauth), Label: "Needs reauth"},
		{Value: string(store.StatusRevoked), Label: "Revoked"},
	} {
		o.Selected = status == o.Value
		d.Statuses = append(d.Statuses, o)
	}
	if h.counter != nil {
		counts, err := h.counter.CountByStatus(r.Context())
		if err != nil {
			h.log.WarnContext(r.Context(), "dashboard: counting connections", "error", err)
		} else {
			d.Summary = summarize(counts)
		}
	}
	base := url.Values{}
	if provider != "" {
		base.Set("provider", provider)
	}
	if status != "" {
		base.Set("status", status)
	}
	if pg.NextAfter != "" {
		next := url.Values{}
		for k, v := range base {
			next[k] = v
		}
		next.Set("after", pg.NextAfter)
		d.NextURL = "/ui/?" + next.Encode()
	}
	if after != "" {
		d.FirstURL = "/ui/"
		if len(base) > 0 {
			d.FirstURL += "?" + base.Encode()
		}
	}
	h.render(w, r, http.StatusOK, "list", page{Title: "Connections", Flashes: flashes, Data: d})
}

var codePattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

// listFlashes turns the result of a redirecting action into banners. Only
// known outcomes, valid ids and code-shaped codes are shown.
func listFlashes(q url.Values) []flash {
	var out []flash
	id := q.Get("id")
	if !broker.ValidID(id) {
		id = ""
	}
	switch q.Get("ok") {
	case "deleted":
		out = append(out, flash{Kind: "ok", Text: "Deleted connection " + id + "."})
		if q.Get("warn") == "revoke_failed" {
			out = append(out, flash{Kind: "warn", Text: "The provider did not confirm the revocation of its tokens; they may stay valid at the provider until they expire."})
		}
	}
	if code := q.Get("err"); codePattern.MatchString(code) {
		out = append(out, flash{Kind: "error", Text: "The action failed.", Code: code})
	}
	return out
}

// --- detail ---

type field struct {
	Name  string
	Value string
	When  when
	Mono  bool
	Note  string
}

type detailData struct {
	Row           row
	Fields        []field
	Failure       *store.Failure
	FailureFirst  when
	FailureNext   when
	Refreshing    bool
	LeaseUntil    when
	Metadata      string
	Events        []eventView
	EventsMissing bool
	EventsError   bool
	CanReconnect  bool
	ReconnectNote string
	Link          string
	LinkExpires   when
	AuditEnabled  bool
	AuditError    bool
	Audit         []auditView
}

type eventView struct {
	Type  string
	Class string
	Code  string
	At    when
}

func (h *Handler) detail(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var flashes []flash
	switch q.Get("ok") {
	case "refreshed":
		flashes = append(flashes, flash{Kind: "ok", Text: "Refreshed: the connection has a new access token."})
	}
	if code := q.Get("err"); codePattern.MatchString(code) {
		flashes = append(flashes, flash{Kind: "error", Text: "Refresh failed.", Code: code})
	}
	h.showDetail(w, r, http.StatusOK, flashes, "", time.Time{})
}

func (h *Handler) showDetail(w http.ResponseWriter, r *http.Request, status int, flashes []flash, link string, linkExp time.Time) {
	id := r.PathValue("id")
	if !broker.ValidID(id) {
		h.renderError(w, r, http.StatusNotFound, "There is no such connection.")
		return
	}
	c, err := h.broker.GetConnection(r.Context(), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	now := h.now()
	d := detailData{
		Row:     h.row(&c),
		Failure: c.Failure,
		Link:    link,
	}
	if link != "" {
		d.LinkExpires = h.when(linkExp)
	}
	exp := h.when(c.ExpiresAt)
	expNote := ""
	if c.ExpiryDefaulted {
		expNote = "assumed: the provider stated no lifetime"
	}
	d.Fields = []field{
		{Name: "Connection id", Value: c.ID, Mono: true},
		{Name: "Provider", Value: c.Provider},
		{Name: "Token type", Value: c.TokenType},
		{Name: "Scope", Value: orDash(c.Scope), Mono: c.Scope != ""},
		{Name: "Access token expires", When: exp, Value: unknownIfZero(c.ExpiresAt), Note: expNote},
		{Name: "Refresh token expires", When: h.when(c.RefreshExpiresAt), Value: unknownIfZero(c.RefreshExpiresAt)},
		{Name: "Refresh chain ends", When: h.when(c.RefreshHardExpiresAt), Value: dashIfZero(c.RefreshHardExpiresAt)},
		{Name: "Last refresh", When: h.when(c.LastRefreshAt), Value: neverIfZero(c.LastRefreshAt)},
		{Name: "Created", When: h.when(c.CreatedAt)},
		{Name: "Updated", When: h.when(c.UpdatedAt)},
		{Name: "Version", Value: fmt.Sprint(c.Version), Mono: true},
	}
	if m := c.MCP; m != nil {
		// MCP connections (docs/mcp.md): where the calls go, who issues
		// the tokens, and scopes a step-up asked for that a person must
		// still consent to.
		d.Fields = append(d.Fields,
			field{Name: "MCP server", Value: m.ServerURL, Mono: true},
			field{Name: "Issuer", Value: m.Issuer, Mono: true},
			field{Name: "Needed scopes", Value: orDash(strings.Join(m.NeededScopes, " ")), Mono: len(m.NeededScopes) > 0,
				Note: neededNote(m.NeededScopes)})
	}
	if f := c.Failure; f != nil {
		d.FailureFirst, d.FailureNext = h.when(f.FirstAt), h.when(f.NextAttemptAt)
	}
	if c.LeaseOwner != "" && now.Before(c.LeaseUntil) {
		d.Refreshing, d.LeaseUntil = true, h.when(c.LeaseUntil)
	}
	if m := bytes.TrimSpace(c.Metadata); len(m) > 0 && !bytes.Equal(m, []byte("null")) {
		var pretty bytes.Buffer
		if json.Indent(&pretty, m, "", "  ") == nil {
			d.Metadata = pretty.String()
		}
	}
	switch {
	case h.events == nil:
		d.EventsMissing = true
	default:
		evs, err := h.events.ConnectionEvents(r.Context(), c.ID, eventsShown)
		if err != nil {
			h.log.WarnContext(r.Context(), "dashboard: connection events", "connection", c.ID, "error", err)
			d.EventsError = true
		}
		for _, e := range evs {
			d.Events = append(d.Events, eventView{Type: e.Type, Class: eventClass(e.Type), Code: e.Code, At: h.when(e.At)})
		}
	}
	d.Audit, d.AuditEnabled, d.AuditError = h.connectionAudit(r, c.ID)
	switch {
	case h.reconnect == nil:
		d.ReconnectNote = "Reconnect links are not available in this deployment."
	case c.Status != store.StatusNeedsReauth:
		d.ReconnectNote = "Only a connection that needs re-authorization can be reconnected."
	default:
		d.CanReconnect = true
	}
	h.render(w, r, status, "detail", page{Title: c.ID, Flashes: flashes, Data: d})
}

func eventClass(typ string) string {
	switch typ {
	case broker.EventRecovered, broker.EventCreated:
		return "ok"
	case broker.EventRefreshFailed:
		return "failing"
	case broker.EventReauthRequired, broker.EventScopeRequired:
		return "reauth"
	case broker.EventDeleted:
		return "revoked"
	}
	return "neutral"
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func unknownIfZero(t time.Time) string { return zeroText(t, "unknown") }
func neverIfZero(t time.Time) string   { return zeroText(t, "never") }
func dashIfZero(t time.Time) string    { return zeroText(t, "—") }

func zeroText(t time.Time, s string) string {
	if t.IsZero() {
		return s
	}
	return ""
}

// --- actions ---

func (h *Handler) refresh(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !broker.ValidID(id) {
		h.renderError(w, r, http.StatusNotFound, "There is no such connection.")
		return
	}
	target := "/ui/connections/" + url.PathEscape(id)
	_, err := h.broker.RefreshConnection(r.Context(), id, nil)
	switch {
	case err == nil:
		h.record(r, id, "refresh", "", "ok")
		h.log.InfoContext(r.Context(), "dashboard refresh", "connection", id, "key", sessionFrom(r).KeyID)
		http.Redirect(w, r, target+"?ok=refreshed", http.StatusSeeOther)
	case errors.Is(err, store.ErrNotFound):
		h.renderError(w, r, http.StatusNotFound, "There is no such connection.")
	default:
		code := errorCode(err)
		h.record(r, id, "refresh", "", code)
		h.log.InfoContext(r.Context(), "dashboard refresh failed", "connection", id, "key", sessionFrom(r).KeyID, "code", code)
		// The failure record, message included, is on the page redirected
		// to; only the code travels in the URL.
		http.Redirect(w, r, target+"?err="+url.QueryEscape(code), http.StatusSeeOther)
	}
}

// errorCode is the sanitized code of a broker error.
func errorCode(err error) string {
	var oe *oauth.Error
	switch {
	case errors.As(err, &oe) && codePattern.MatchString(oe.Code):
		return oe.Code
	case errors.Is(err, store.ErrUnavailable):
		return "store_unavailable"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "internal"
}

func (h *Handler) createReconnect(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if h.reconnect == nil || !broker.ValidID(id) {
		h.showDetail(w, r, http.StatusNotFound, []flash{{Kind: "error", Text: "Reconnect links are not available in this deployment."}}, "", time.Time{})
		return
	}
	link, exp, err := h.reconnect.ReconnectLink(r.Context(), id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			h.renderError(w, r, http.StatusNotFound, "There is no such connection.")
			return
		}
		h.log.WarnContext(r.Context(), "dashboard reconnect link failed", "connection", id, "error", err)
		text, code := "The reconnect link could not be created.", errorCode(err)
		if broker.IsValidation(err) {
			// For example a provider without an authorization endpoint.
			text, code = text+" "+strings.TrimPrefix(err.Error(), "broker: "), ""
		}
		h.showDetail(w, r, http.StatusBadGateway, []flash{{Kind: "error", Text: text, Code: code}}, "", time.Time{})
		return
	}
	// Rendered, not redirected: the link must not end up in a URL.
	h.showDetail(w, r, http.StatusOK, []flash{{Kind: "ok", Text: "Reconnect link created. Send it to the person who owns this connection."}}, link, exp)
}

func (h *Handler) confirmDelete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !broker.ValidID(id) {
		h.renderError(w, r, http.StatusNotFound, "There is no such connection.")
		return
	}
	c, err := h.broker.GetConnection(r.Context(), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.render(w, r, http.StatusOK, "delete", page{Title: "Delete " + c.ID, Data: h.row(&c)})
}

func (h *Handler) deleteConnection(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !broker.ValidID(id) {
		h.renderError(w, r, http.StatusNotFound, "There is no such connection.")
		return
	}
	if r.PostFormValue("confirm") != id {
		h.renderError(w, r, http.StatusBadRequest, "Deleting needs the confirmation step: open the connection and use its Delete button.")
		return
	}
	revokeErr, err := h.broker.DeleteConnection(r.Context(), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.record(r, id, "connection.delete", "", "ok")
	h.log.InfoContext(r.Context(), "dashboard delete", "connection", id, "key", sessionFrom(r).KeyID)
	target := "/ui/?ok=deleted&id=" + url.QueryEscape(id)
	if revokeErr != nil {
		target += "&warn=revoke_failed"
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// fail renders a broker or store error.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		h.renderError(w, r, http.StatusNotFound, "There is no such connection. It may have been deleted.")
	case errors.Is(err, store.ErrUnavailable):
		h.renderError(w, r, http.StatusServiceUnavailable, "The database could not be reached. Try again shortly.")
	case broker.IsValidation(err):
		h.renderError(w, r, http.StatusBadRequest, strings.TrimPrefix(err.Error(), "broker: "))
	default:
		h.log.ErrorContext(r.Context(), "dashboard request failed", "error", err)
		h.renderError(w, r, http.StatusInternalServerError, "Something went wrong. The details are in the server log.")
	}
}

func neededNote(needed []string) string {
	if len(needed) == 0 {
		return ""
	}
	return "the server asked for more access: create a new connect session for this connection"
}
