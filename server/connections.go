package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/store"
)

// importRequest is the body of POST /v1/connections.
type importRequest struct {
	ID                    string          `json:"id"`
	Provider              string          `json:"provider"`
	AccessToken           string          `json:"access_token"`
	RefreshToken          string          `json:"refresh_token"`
	ExpiresIn             *float64        `json:"expires_in"`
	ExpiresAt             string          `json:"expires_at"`
	IssuedAt              string          `json:"issued_at"`
	RefreshTokenExpiresAt string          `json:"refresh_token_expires_at"`
	TokenType             string          `json:"token_type"`
	Scope                 string          `json:"scope"`
	Metadata              json.RawMessage `json:"metadata"`
	// Grant "client_credentials" asks the broker to obtain the token
	// itself (connect.go); Scopes are requested with it.
	Grant  string   `json:"grant"`
	Scopes []string `json:"scopes"`
}

// maxExpiresIn bounds an imported lifetime, well inside time.Duration.
const maxExpiresIn = 10 * 365 * 24 * time.Hour

func (req *importRequest) toImport() (broker.Import, error) {
	in := broker.Import{
		ID:           req.ID,
		Provider:     req.Provider,
		AccessToken:  req.AccessToken,
		RefreshToken: req.RefreshToken,
		TokenType:    req.TokenType,
		Scope:        req.Scope,
	}
	if req.ExpiresIn != nil {
		secs := *req.ExpiresIn
		if !(secs > 0) {
			return in, &broker.ValidationError{Field: "expires_in", Problem: "must be a positive number of seconds; leave it out when unknown"}
		}
		if secs > maxExpiresIn.Seconds() {
			return in, &broker.ValidationError{Field: "expires_in", Problem: "must be at most ten years"}
		}
		in.ExpiresIn = time.Duration(secs * float64(time.Second))
	}
	var err error
	if in.ExpiresAt, err = parseTime("expires_at", req.ExpiresAt); err != nil {
		return in, err
	}
	if in.IssuedAt, err = parseTime("issued_at", req.IssuedAt); err != nil {
		return in, err
	}
	if in.RefreshTokenExpiresAt, err = parseTime("refresh_token_expires_at", req.RefreshTokenExpiresAt); err != nil {
		return in, err
	}
	if m := bytes.TrimSpace(req.Metadata); len(m) > 0 && !bytes.Equal(m, []byte("null")) {
		in.Metadata = m
	}
	return in, nil
}

func parseTime(field, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, &broker.ValidationError{Field: field, Problem: "must be an RFC 3339 time such as 2030-01-02T15:04:05Z"}
	}
	return t.UTC(), nil
}

func (s *Server) importConnection(w http.ResponseWriter, r *http.Request) {
	var req importRequest
	if e, ok := s.decodeJSON(w, r, &req); !ok {
		s.writeError(w, r, e)
		return
	}
	if req.Grant != "" || req.Scopes != nil {
		s.importClientCredentials(w, r, &req)
		return
	}
	in, err := req.toImport()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if broker.ValidID(in.ID) {
		info(r.Context()).connection = in.ID
	}
	c, err := s.broker.CreateConnection(r.Context(), in)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/connections/"+url.PathEscape(c.ID))
	s.writeJSON(w, r, http.StatusCreated, newView(&c, true, s.now()))
}

// reimportConnection replaces a connection's tokens with ones obtained
// elsewhere (or creates it): how a connection imported by API is repaired
// after it needed re-authentication. The id comes from the path; a body id,
// if any, must match it.
func (s *Server) reimportConnection(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var req importRequest
	if e, ok := s.decodeJSON(w, r, &req); !ok {
		s.writeError(w, r, e)
		return
	}
	if req.ID != "" && req.ID != id {
		s.writeError(w, r, invalid("id: the body's id does not match the path's"))
		return
	}
	if req.Grant != "" || req.Scopes != nil {
		s.writeError(w, r, invalid("grant: client-credentials connections are created with POST, not re-imported"))
		return
	}
	req.ID = id
	in, err := req.toImport()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	info(r.Context()).connection = id
	c, created, err := s.broker.ReimportConnection(r.Context(), in)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		w.Header().Set("Location", "/v1/connections/"+url.PathEscape(c.ID))
	}
	s.writeJSON(w, r, status, newView(&c, true, s.now()))
}

// decodeJSON reads one JSON object into dst, refusing unknown fields, and
// says what was wrong in terms of the request's fields.
func (s *Server) decodeJSON(w http.ResponseWriter, r *http.Request, dst any) (apiError, bool) {
	return decodeJSONUpTo(w, r, dst, s.maxBody)
}

// decodeJSONUpTo is decodeJSON with a body limit of its own.
func decodeJSONUpTo(w http.ResponseWriter, r *http.Request, dst any, limit int64) (apiError, bool) {
	err := decodeObject(http.MaxBytesReader(w, r.Body, limit), dst)
	if err == nil {
		return apiError{}, true
	}

	var (
		maxErr  *http.MaxBytesError
		syntax  *json.SyntaxError
		typeErr *json.UnmarshalTypeError
	)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The body took longer than its deadline (limits.go); the
		// connection cannot be reused.
		w.Header().Set("Connection", "close")
		return apiError{status: http.StatusRequestTimeout, code: codeInvalidRequest,
			message: "the request body was not received in time"}, false
	case errors.As(err, &maxErr):
		return apiError{status: http.StatusRequestEntityTooLarge, code: codeInvalidRequest,
			message: fmt.Sprintf("request body is larger than %d bytes", maxErr.Limit)}, false
	case errors.Is(err, io.EOF):
		return invalid("request body is empty; expected a JSON object"), false
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalid("request body is not valid JSON: it ends too soon"), false
	case errors.As(err, &syntax):
		return invalid(fmt.Sprintf("request body is not valid JSON at byte %d", syntax.Offset)), false
	case errors.As(err, &typeErr) && typeErr.Field == "":
		return invalid("request body must be a JSON object"), false
	case errors.Is(err, errNotObject):
		return invalid("request body must be a JSON object"), false
	case errors.Is(err, errTrailingData):
		return invalid("request body must hold a single JSON object"), false
	}
	if msg, ok := fieldProblem(err); ok {
		return invalid(msg), false
	}
	return invalid("request body is not a valid JSON object"), false
}

// fieldProblem says which field of a decoded object was wrong and how, in
// the request's terms; false when err is not about one field. Used for a
// request body and for each item of a batch.
func fieldProblem(err error) (string, bool) {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) && typeErr.Field != "" {
		return fmt.Sprintf("%s: must be %s, not %s", typeErr.Field, jsonKind(typeErr.Type.Kind()), typeErr.Value), true
	}
	if field, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return "unknown field " + shorten(field, 80), true
	}
	return "", false
}

var (
	errTrailingData = errors.New("trailing data after the JSON object")
	errNotObject    = errors.New("not a JSON object")
)

// decodeObject decodes exactly one JSON object from body into dst.
func decodeObject(body io.Reader, dst any) error {
	data, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] != '{' {
		// null, a string, an array: decoding null would quietly leave dst
		// empty, and the others earn a less helpful message.
		return errNotObject
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errTrailingData
	}
	return nil
}

func jsonKind(k reflect.Kind) string {
	switch k {
	case reflect.String:
		return "a string"
	case reflect.Float64, reflect.Float32, reflect.Int, reflect.Int64, reflect.Int32:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return "another type"
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func (s *Server) listConnections(w http.ResponseWriter, r *http.Request) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		s.writeError(w, r, invalid("the query string is malformed"))
		return
	}
	var opts store.ListOptions
	for name, vals := range q {
		if len(vals) > 1 {
			s.writeError(w, r, invalid(fmt.Sprintf("query parameter %q is given more than once", shorten(name, 40))))
			return
		}
		v := vals[0]
		switch name {
		case "provider":
			opts.Provider = v
		case "status":
			opts.Status = store.Status(v)
			if !opts.Status.Valid() {
				s.writeError(w, r, invalid(`status: must be "active", "needs_reauth" or "revoked"`))
				return
			}
		case "after":
			opts.After = v
		case "limit":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > store.MaxListLimit {
				s.writeError(w, r, invalid(fmt.Sprintf("limit: must be a whole number from 1 to %d", store.MaxListLimit)))
				return
			}
			opts.Limit = n
		default:
			s.writeError(w, r, invalid(fmt.Sprintf("unknown query parameter %q; known: provider, status, limit, after", shorten(name, 40))))
			return
		}
	}
	page, err := s.broker.ListConnections(r.Context(), opts)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := listView{Connections: make([]connectionView, 0, len(page.Connections)), NextAfter: page.NextAfter}
	for i := range page.Connections {
		out.Connections = append(out.Connections, newView(&page.Connections[i], true, s.now()))
	}
	s.writeJSON(w, r, http.StatusOK, out)
}

func (s *Server) getConnection(w http.ResponseWriter, r *http.Request) {
	c, err := s.broker.GetConnection(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, newView(&c, info(r.Context()).admin, s.now()))
}

func (s *Server) getToken(w http.ResponseWriter, r *http.Request) {
	t, err := s.broker.GetToken(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := tokenView{AccessToken: t.AccessToken, TokenType: t.TokenType, ExpiresAt: timeOrNil(t.ExpiresAt)}
	if !t.ExpiresAt.IsZero() {
		secs := max(int64(t.ExpiresAt.Sub(s.now())/time.Second), 0)
		out.ExpiresIn = &secs
	}
	body, err := encodeTokenView(&out)
	if err != nil {
		s.encodeFailed(w, r, err)
		return
	}
	s.writeBody(w, http.StatusOK, body)
}

func (s *Server) refreshConnection(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := s.broker.RefreshConnection(r.Context(), id, nil); err != nil {
		s.fail(w, r, err)
		return
	}
	c, err := s.broker.GetConnection(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, newView(&c, true, s.now()))
}

func (s *Server) deleteConnection(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c, err := s.broker.GetConnection(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	revokeErr, err := s.broker.DeleteConnection(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := deleteView{Deleted: true}
	if revokeErr != nil {
		out.RevocationError = "revocation_failed"
		var oe *oauth.Error
		if errors.As(revokeErr, &oe) && oe.Code != "" {
			out.RevocationError = publicCode(oe.Code)
		}
		s.log.WarnContext(r.Context(), "connection deleted; revocation at the provider failed",
			"connection", id, "code", out.RevocationError)
	} else if mb, ok := s.broker.(MCPBroker); ok && c.MCP != nil {
		out.Revoked = mb.MCPCanRevoke(r.Context(), c.MCP)
	} else if p, ok := s.broker.Provider(c.Provider); ok && p.CanRevoke {
		out.Revoked = true
	}
	s.writeJSON(w, r, http.StatusOK, out)
}

// connectionView is a connection as the API shows it: never its tokens.
type connectionView struct {
	ID                    string       `json:"id"`
	Provider              string       `json:"provider"`
	Status                store.Status `json:"status"`
	TokenType             string       `json:"token_type"`
	Scope                 string       `json:"scope"`
	ExpiresAt             *time.Time   `json:"expires_at"`
	ExpirySource          string       `json:"expiry_source"`
	HasRefreshToken       bool         `json:"has_refresh_token"`
	Grant                 string       `json:"grant,omitempty"` // "client_credentials" or absent
	RefreshTokenExpiresAt *time.Time   `json:"refresh_token_expires_at"`
	// RefreshChainExpiresAt is a hard limit on the refresh token chain
	// that refreshing does not extend.
	RefreshChainExpiresAt *time.Time `json:"refresh_chain_expires_at"`
	// RefreshExpiringSoon warns that the refresh token (or its chain) ends
	// within two weeks: the user will have to reconnect.
	RefreshExpiringSoon bool       `json:"refresh_token_expiring_soon"`
	LastRefreshAt       *time.Time `json:"last_refresh_at"`
	// NextRefreshAt is when the background scheduler refreshes the
	// connection next (docs/architecture.md, "The schedule").
	NextRefreshAt *time.Time      `json:"next_refresh_at"`
	Failure       *failureView    `json:"failure"`
	Metadata      json.RawMessage `json:"metadata"`
	Version       int64           `json:"version"`
	CreatedAt     *time.Time      `json:"created_at"`
	UpdatedAt     *time.Time      `json:"updated_at"`
	// MCPServerURL, Issuer and NeededScopes describe a connection to an
	// MCP server (docs/mcp.md); absent for other connections.
	MCPServerURL string   `json:"mcp_server_url,omitempty"`
	Issuer       string   `json:"issuer,omitempty"`
	NeededScopes []string `json:"needed_scopes,omitempty"`
}

type failureView struct {
	Code string `json:"code"`
	// Message is the provider's own text: admins only.
	Message       string     `json:"message,omitempty"`
	Attempts      int        `json:"attempts"`
	NextAttemptAt *time.Time `json:"next_attempt_at"`
}

type listView struct {
	Connections []connectionView `json:"connections"`
	NextAfter   string           `json:"next_after"`
}

type tokenView struct {
	AccessToken string     `json:"access_token"`
	TokenType   string     `json:"token_type"`
	ExpiresAt   *time.Time `json:"expires_at"`
	ExpiresIn   *int64     `json:"expires_in,omitempty"`
}

type deleteView struct {
	Deleted         bool   `json:"deleted"`
	Revoked         bool   `json:"revoked"`
	RevocationError string `json:"revocation_error,omitempty"`
}

// Expiry sources of connectionView.ExpirySource.
const (
	expiryProvider = "provider" // stated by the provider (or the importer)
	expiryDefault  = "default"  // the provider's configured default lifetime
	expiryUnknown  = "unknown"
)

func newView(c *store.Connection, admin bool, now time.Time) connectionView {
	v := connectionView{
		ID:                    c.ID,
		Provider:              c.Provider,
		Status:                c.Status,
		TokenType:             c.TokenType,
		Scope:                 c.Scope,
		ExpiresAt:             timeOrNil(c.ExpiresAt),
		ExpirySource:          expiryProvider,
		HasRefreshToken:       len(c.RefreshToken) > 0,
		Grant:                 c.Grant,
		RefreshTokenExpiresAt: timeOrNil(c.RefreshExpiresAt),
		RefreshChainExpiresAt: timeOrNil(c.RefreshHardExpiresAt),
		RefreshExpiringSoon:   broker.RefreshExpiringSoon(c, now),
		LastRefreshAt:         timeOrNil(c.LastRefreshAt),
		NextRefreshAt:         timeOrNil(c.NextRefreshAt),
		Version:               c.Version,
		CreatedAt:             timeOrNil(c.CreatedAt),
		UpdatedAt:             timeOrNil(c.UpdatedAt),
	}
	switch {
	case c.ExpiresAt.IsZero():
		v.ExpirySource = expiryUnknown
	case c.ExpiryDefaulted:
		v.ExpirySource = expiryDefault
	}
	if len(c.Metadata) > 0 && json.Valid(c.Metadata) {
		v.Metadata = c.Metadata
	}
	if m := c.MCP; m != nil {
		v.MCPServerURL, v.Issuer, v.NeededScopes = m.ServerURL, m.Issuer, m.NeededScopes
	}
	if f := c.Failure; f != nil {
		v.Failure = &failureView{Code: publicCode(f.Code), Attempts: f.Attempts, NextAttemptAt: timeOrNil(f.NextAttemptAt)}
		if admin {
			v.Failure.Code = f.Code
			v.Failure.Message = f.Message
		}
	}
	return v
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}
