package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/store"
)

// Connector is what the connect flow and client-credentials imports need
// from the service core. [*broker.Broker] satisfies it; a [Broker] that
// does not makes those routes answer 404.
type Connector interface {
	CreateConnectSession(ctx context.Context, req broker.ConnectRequest) (store.ConnectSession, error)
	BeginConnect(ctx context.Context, sessionID, redirectURI string) (string, error)
	AbortConnect(ctx context.Context, state string) (store.ConnectSession, error)
	CompleteConnectResponse(ctx context.Context, resp broker.AuthorizationResponse, redirectURI string) (broker.ConnectResult, error)
	CheckErrorResponseIssuer(ctx context.Context, s store.ConnectSession, iss string, present bool) error
	CreateClientCredentialsConnection(ctx context.Context, in broker.ClientCredentialsImport) (store.Connection, error)
}

var _ Connector = (*broker.Broker)(nil)

// callbackPath is the redirect URI's path; register PublicURL+callbackPath
// with each provider.
const callbackPath = "/v1/connect/callback"

func (s *Server) setPublicURL(raw string) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("server: PublicURL %q is not an absolute http(s) URL without query or fragment", raw)
	}
	s.publicURL = strings.TrimRight(raw, "/")
	return nil
}

func (s *Server) connector() (Connector, bool) {
	c, ok := s.broker.(Connector)
	return c, ok && s.publicURL != ""
}

// connectSessionRequest is the body of POST /v1/connect-sessions.
type connectSessionRequest struct {
	ConnectionID string   `json:"connection_id"`
	Provider     string   `json:"provider"`
	RedirectURL  string   `json:"redirect_url"`
	Scopes       []string `json:"scopes"`
	// MCPServerURL connects an MCP server by its URL, in place of
	// Provider (docs/mcp.md).
	MCPServerURL string `json:"mcp_server_url"`
}

type connectSessionView struct {
	ID           string    `json:"id"`
	URL          string    `json:"url"`
	ExpiresAt    time.Time `json:"expires_at"`
	ConnectionID string    `json:"connection_id"`
	Provider     string    `json:"provider"`
	MCPServerURL string    `json:"mcp_server_url,omitempty"`
	Scopes       []string  `json:"scopes,omitempty"`
}

// createConnectSession starts a connect flow: the answer's url is the link
// to hand to the person who will grant access. redirect_url may point
// anywhere: only admins create sessions, so it is the admin's choice of
// destination, not an open redirect a stranger can aim.
func (s *Server) createConnectSession(w http.ResponseWriter, r *http.Request) {
	conn, ok := s.connector()
	if !ok {
		s.writeError(w, r, apiError{status: http.StatusNotFound, code: codeNotFound,
			message: "the connect flow is not available: public_url is not configured"})
		return
	}
	var req connectSessionRequest
	if e, ok := s.decodeJSON(w, r, &req); !ok {
		s.writeError(w, r, e)
		return
	}
	ri := info(r.Context())
	if broker.ValidID(req.ConnectionID) {
		ri.connection = req.ConnectionID
	}
	// A connect key creates links only for connections in its scope.
	if err := checkNewScope(ri.apiKey, req.ConnectionID, req.Provider); err != nil {
		s.fail(w, r, err)
		return
	}
	sess, err := conn.CreateConnectSession(r.Context(), broker.ConnectRequest{
		ConnectionID: req.ConnectionID, Provider: req.Provider, RedirectURL: req.RedirectURL, Scopes: req.Scopes,
		MCPServerURL: req.MCPServerURL,
	})
	if errors.Is(err, broker.ErrProviderMismatch) && len(ri.apiKey.Providers) > 0 {
		// The connection exists under a provider outside the key's scope:
		// answered as missing, like every out-of-scope connection.
		s.fail(w, r, errOutOfScope)
		return
	}
	if errors.Is(err, broker.ErrProviderMismatch) {
		s.writeError(w, r, apiError{status: http.StatusConflict, code: codeAlreadyExists,
			message: "connection " + req.ConnectionID + " exists with another provider or MCP server; delete it first or choose another id"})
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeJSON(w, r, http.StatusCreated, connectSessionView{
		ID:           sess.ID,
		URL:          s.publicURL + "/v1/connect/" + url.PathEscape(sess.ID),
		ExpiresAt:    sess.ExpiresAt.UTC(),
		ConnectionID: sess.ConnectionID,
		Provider:     sess.Provider,
		MCPServerURL: mcpServerURL(sess.MCP),
		Scopes:       sess.Scopes,
	})
}

// connectStart is the link the person opens: it sends the browser to the
// provider's authorization endpoint with a fresh state and PKCE challenge.
func (s *Server) connectStart(w http.ResponseWriter, r *http.Request) {
	conn, ok := s.connector()
	if !ok {
		s.page(w, r, http.StatusNotFound, "not_found", "Not available", "Connecting accounts is not set up on this server.")
		return
	}
	authURL, err := conn.BeginConnect(r.Context(), r.PathValue("session"), s.publicURL+callbackPath)
	if err != nil {
		s.connectFailed(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, authURL, http.StatusFound)
}

// connectCallback is the redirect URI (RFC 6749 §4.1.2). It completes the
// flow bound to state, or ends it on a page that says why.
func (s *Server) connectCallback(w http.ResponseWriter, r *http.Request) {
	conn, ok := s.connector()
	if !ok {
		s.page(w, r, http.StatusNotFound, "not_found", "Not available", "Connecting accounts is not set up on this server.")
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		s.page(w, r, http.StatusBadRequest, codeInvalidRequest, "Invalid callback", "The provider's answer could not be read.")
		return
	}
	state := q.Get("state")
	if e := q.Get("error"); e != "" {
		// RFC 6749 §4.1.2.1: the provider ended the flow. The session is
		// used up either way, so the link cannot be replayed.
		if state != "" {
			sess, err := conn.AbortConnect(r.Context(), state)
			if err != nil && !errors.Is(err, broker.ErrConnectSessionNotFound) {
				s.log.WarnContext(r.Context(), "could not end the connect session", "error", err)
			}
			if err == nil {
				info(r.Context()).connection = sess.ConnectionID
				// RFC 9207 §2.4 covers error responses too: one that did
				// not come from the session's provider is not repeated.
				if ierr := conn.CheckErrorResponseIssuer(r.Context(), sess, q.Get("iss"), q.Has("iss")); ierr != nil {
					s.connectFailed(w, r, ierr)
					return
				}
			}
		}
		code := publicCode(e)
		if e == "access_denied" {
			s.page(w, r, http.StatusForbidden, code, "Access was not granted",
				"The connection was not created because access was declined at the provider. Ask for a new link to try again.")
			return
		}
		s.page(w, r, http.StatusBadRequest, code, "The provider reported an error",
			"The provider ended the sign-in with the error "+code+". Ask for a new link to try again.")
		return
	}
	if state == "" {
		s.page(w, r, http.StatusBadRequest, codeInvalidRequest, "Invalid callback",
			"The provider's answer has no state parameter, so it cannot be matched to a connect link.")
		return
	}
	res, err := conn.CompleteConnectResponse(r.Context(), broker.AuthorizationResponse{
		State: state, Code: q.Get("code"), Iss: q.Get("iss"), IssPresent: q.Has("iss"),
	}, s.publicURL+callbackPath)
	if res.Session.ConnectionID != "" {
		info(r.Context()).connection = res.Session.ConnectionID
	}
	if err != nil {
		s.connectFailed(w, r, err)
		return
	}
	c := res.Connection
	if dest := res.Session.RedirectURL; dest != "" {
		u, err := url.Parse(dest)
		if err == nil {
			v := u.Query()
			v.Set("connection_id", c.ID)
			v.Set("status", "connected")
			u.RawQuery = v.Encode()
			w.Header().Set("Cache-Control", "no-store")
			w.Header().Set("Referrer-Policy", "no-referrer")
			http.Redirect(w, r, u.String(), http.StatusSeeOther)
			return
		}
	}
	verb := "created"
	if res.Reconnected {
		verb = "reconnected"
	}
	s.page(w, r, http.StatusOK, "", "Connected",
		"Connection "+c.ID+" to "+c.Provider+" was "+verb+". You can close this window.")
}

// connectFailed ends a connect request on a page saying what went wrong,
// in words for the person in front of the browser. Provider descriptions
// and internal errors go to the log only.
func (s *Server) connectFailed(w http.ResponseWriter, r *http.Request, err error) {
	var (
		oe *oauth.Error
		ve *broker.ValidationError
	)
	switch {
	case errors.Is(err, broker.ErrConnectSessionNotFound):
		s.page(w, r, http.StatusNotFound, codeNotFound, "Link not valid",
			"This connect link is not valid or has already been used. Ask for a new one.")
	case errors.Is(err, broker.ErrConnectSessionExpired):
		s.page(w, r, http.StatusGone, "expired", "Link expired",
			"This connect link has expired. Ask for a new one.")
	case errors.Is(err, oauth.ErrIssuerMismatch):
		s.page(w, r, http.StatusBadRequest, "issuer_mismatch", "Answer from the wrong server",
			"The sign-in answer did not come from this connection's provider, so it was not used and nothing was saved. Ask for a new link to try again.")
	case errors.Is(err, broker.ErrProviderMismatch):
		s.page(w, r, http.StatusConflict, codeAlreadyExists, "Connection belongs to another provider",
			"A connection with this id exists for another provider, so nothing was changed.")
	case errors.As(err, &ve):
		s.page(w, r, http.StatusBadRequest, codeInvalidRequest, "Invalid request", ve.Field+": "+ve.Problem)
	case errors.As(err, &oe):
		s.log.WarnContext(r.Context(), "connect flow failed at the provider", "code", publicCode(oe.Code), "kind", oe.Kind.String())
		status := http.StatusBadGateway
		if oe.Kind == oauth.KindTerminal {
			status = http.StatusBadRequest
		}
		s.page(w, r, status, publicCode(oe.Code), "The provider refused",
			"The provider did not issue a token ("+publicCode(oe.Code)+"). Nothing was saved; ask for a new link to try again.")
	case errors.Is(err, store.ErrUnavailable):
		s.page(w, r, http.StatusServiceUnavailable, codeProviderUnavailable, "Try again later",
			"The service is temporarily unavailable. Nothing was saved.")
	default:
		s.log.ErrorContext(r.Context(), "connect flow failed", "route", info(r.Context()).pattern, "error", err)
		s.page(w, r, http.StatusInternalServerError, codeInternal, "Something went wrong",
			"The connection could not be completed. Nothing was saved.")
	}
}

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} · tokenbroker</title>
<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}h1{font-size:1.4rem}code{background:#eee;padding:0 .2em}</style>
</head>
<body>
<h1>{{.Title}}</h1>
<p>{{.Message}}</p>
{{if .Code}}<p>Error code: <code>{{.Code}}</code></p>{{end}}
</body>
</html>
`))

// page answers with a small HTML page. Everything in it is escaped by
// html/template; it never holds a token, code, state or verifier.
func (s *Server) page(w http.ResponseWriter, r *http.Request, status int, code, title, message string) {
	if code != "" {
		info(r.Context()).errCode = code
	}
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, struct{ Title, Message, Code string }{title, message, code}); err != nil {
		s.log.ErrorContext(r.Context(), "cannot render page", "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// importClientCredentials is POST /v1/connections with a grant: the
// broker obtains the token itself, so the request carries none.
func (s *Server) importClientCredentials(w http.ResponseWriter, r *http.Request, req *importRequest) {
	if req.Grant == "" {
		s.writeError(w, r, invalid(`scopes: only with "grant": "client_credentials"; an imported token's scope goes in scope`))
		return
	}
	if req.Grant != store.GrantClientCredentials {
		s.writeError(w, r, invalid(`grant: must be "client_credentials" or left out`))
		return
	}
	switch {
	case req.AccessToken != "", req.RefreshToken != "":
		s.writeError(w, r, invalid("access_token, refresh_token: a client_credentials connection obtains its own token; leave them out"))
		return
	case req.ExpiresIn != nil, req.ExpiresAt != "", req.RefreshTokenExpiresAt != "", req.TokenType != "", req.Scope != "":
		s.writeError(w, r, invalid("expires_in, expires_at, refresh_token_expires_at, token_type, scope: set by the provider's answer for a client_credentials connection; ask for scopes with scopes"))
		return
	}
	conn, ok := s.broker.(Connector)
	if !ok {
		s.writeError(w, r, invalid("grant: client_credentials connections are not supported by this server"))
		return
	}
	if broker.ValidID(req.ID) {
		info(r.Context()).connection = req.ID
	}
	in := broker.ClientCredentialsImport{ID: req.ID, Provider: req.Provider, Scopes: req.Scopes}
	if m := bytes.TrimSpace(req.Metadata); len(m) > 0 && !bytes.Equal(m, []byte("null")) {
		in.Metadata = m
	}
	c, err := conn.CreateClientCredentialsConnection(r.Context(), in)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/connections/"+url.PathEscape(c.ID))
	s.writeJSON(w, r, http.StatusCreated, newView(&c, true, s.now()))
}

func mcpServerURL(m *store.MCP) string {
	if m == nil {
		return ""
	}
	return m.ServerURL
}
