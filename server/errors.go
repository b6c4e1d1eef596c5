package server

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/store"
)

// Error codes of the API (README.md, after the route table).
const (
	codeUnauthenticated     = "unauthenticated"
	codeForbidden           = "forbidden"
	codeNotFound            = "not_found"
	codeAlreadyExists       = "already_exists"
	codeInvalidRequest      = "invalid_request"
	codeReauthRequired      = "reauth_required"
	codeProviderUnavailable = "provider_unavailable"
	codeMethodNotAllowed    = "method_not_allowed"
	codeBadGateway          = "bad_gateway"
	codeInternal            = "internal"
)

const msgInternal = "internal error"

// errCodeCanceled marks, in the request log only, a request whose client
// went away: it gets no answer.
const errCodeCanceled = "canceled"

// defaultRetryAfter is what a 503 advises when nobody said how long to wait.
const defaultRetryAfter = 5 * time.Second

// apiError is one error answer.
type apiError struct {
	status     int
	code       string
	message    string
	retryAfter time.Duration // 503 only; Retry-After is at least one second
}

func invalid(message string) apiError {
	return apiError{status: http.StatusBadRequest, code: codeInvalidRequest, message: message}
}

// safeCode matches error codes that may be shown to any caller: a provider
// code is echoed only when it looks like one, not like free text (or a
// token) in the error field.
var safeCode = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

func publicCode(code string) string {
	if safeCode.MatchString(code) {
		return code
	}
	return "provider_error"
}

// classify maps a Go error to its answer. admin callers also get the
// provider's own description of a failure; others get the code and a fixed
// sentence only.
func classify(err error, admin bool) apiError {
	var ve *broker.ValidationError
	var oe *oauth.Error
	var me *broker.MCPError
	switch {
	case errors.As(err, &me):
		// Discovery or registration of an MCP server failed: the URL the
		// caller gave is not usable, and the message says why.
		return invalid(me.Error())
	case errors.Is(err, errNoKey), errors.Is(err, errBadKey):
		return apiError{status: http.StatusUnauthorized, code: codeUnauthenticated, message: err.Error()}
	case errors.As(err, &ve):
		return invalid(ve.Field + ": " + ve.Problem)
	case errors.Is(err, store.ErrNotFound):
		return apiError{status: http.StatusNotFound, code: codeNotFound, message: "connection not found"}
	case errors.Is(err, store.ErrAlreadyExists):
		return apiError{status: http.StatusConflict, code: codeAlreadyExists, message: "a connection with this id already exists"}
	case errors.Is(err, broker.ErrProviderMismatch):
		return apiError{status: http.StatusConflict, code: codeAlreadyExists, message: "a connection with this id exists under another provider"}
	case errors.Is(err, store.ErrUnavailable):
		return apiError{status: http.StatusServiceUnavailable, code: codeProviderUnavailable,
			message: "database unavailable", retryAfter: defaultRetryAfter}
	case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrLeaseHeld):
		// Lost races the broker gave up retrying: the connection is busy.
		return apiError{status: http.StatusServiceUnavailable, code: codeProviderUnavailable,
			message: "the connection is being changed; try again", retryAfter: time.Second}
	case errors.Is(err, oauth.ErrReauthRequired):
		code := "reauth_required"
		if errors.As(err, &oe) {
			code = publicCode(oe.Code)
		}
		msg := "the provider refused to renew this connection (" + code + "); a person must reconnect it"
		return apiError{status: http.StatusConflict, code: codeReauthRequired, message: withDescription(msg, oe, admin)}
	case errors.As(err, &oe), errors.Is(err, oauth.ErrTransient):
		code := "unavailable"
		if oe != nil {
			code = publicCode(oe.Code)
		}
		msg := "the provider is temporarily unavailable (" + code + "); try again later"
		return apiError{status: http.StatusServiceUnavailable, code: codeProviderUnavailable,
			message: withDescription(msg, oe, admin), retryAfter: oauth.RetryAfter(err)}
	case errors.Is(err, context.DeadlineExceeded):
		return apiError{status: http.StatusServiceUnavailable, code: codeProviderUnavailable,
			message: "timed out; try again later"}
	}
	return apiError{status: http.StatusInternalServerError, code: codeInternal, message: msgInternal}
}

func withDescription(msg string, oe *oauth.Error, admin bool) string {
	if admin && oe != nil && oe.Description != "" {
		return msg + ": " + oe.Description
	}
	return msg
}

// fail answers with the error err maps to. A request whose client has gone
// gets no answer at all.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		info(r.Context()).errCode = errCodeCanceled
		return
	}
	e := classify(err, info(r.Context()).admin)
	if e.status == http.StatusInternalServerError {
		// The details go to the log only. Errors of this package and the
		// broker never carry token values.
		s.log.ErrorContext(r.Context(), "internal error", "route", info(r.Context()).pattern, "error", err)
	}
	s.writeError(w, r, e)
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, e apiError) {
	info(r.Context()).errCode = e.code
	h := w.Header()
	// Marks tokenbroker's own error answers, so that a proxy client can
	// tell them from the provider's (client/remote).
	h.Set("Tokenbroker-Error", e.code)
	switch e.status {
	case http.StatusUnauthorized:
		// RFC 6750 §3: challenge, with invalid_token when a key was sent.
		challenge := `Bearer realm="tokenbroker"`
		if r.Header.Get("Authorization") != "" {
			challenge += `, error="invalid_token"`
		}
		h.Set("WWW-Authenticate", challenge)
	case http.StatusServiceUnavailable:
		h.Set("Retry-After", retryAfterSeconds(e.retryAfter))
	}
	s.writeJSON(w, r, e.status, errorBody{Error: errorDetail{Code: e.code, Message: e.message}})
}

// retryAfterSeconds renders a wait as Retry-After delay-seconds (RFC 9110
// §10.2.3): whole seconds, rounded up, at least one.
func retryAfterSeconds(d time.Duration) string {
	if d <= 0 {
		d = defaultRetryAfter
	}
	secs := math.Ceil(d.Seconds())
	if secs < 1 {
		secs = 1
	}
	const maxSecs = 24 * 60 * 60
	if secs > maxSecs {
		secs = maxSecs
	}
	return strconv.Itoa(int(secs))
}

// writeJSON answers with v as JSON. Responses may carry tokens or
// connection details, so no cache may keep them.
func (s *Server) writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		s.encodeFailed(w, r, err)
		return
	}
	s.writeBody(w, status, append(body, '\n'))
}

// encodeFailed answers for a response that could not be encoded.
func (s *Server) encodeFailed(w http.ResponseWriter, r *http.Request, err error) {
	s.log.ErrorContext(r.Context(), "cannot encode response", "route", info(r.Context()).pattern, "error", err)
	info(r.Context()).errCode = codeInternal
	s.writeBody(w, http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"internal error"}}`+"\n"))
}

// Shared, never modified header values: Header.Set would allocate one
// slice per header and answer. Add on one appends to a copy, as their
// capacity is their length.
var (
	headerJSON    = []string{"application/json"}
	headerNoStore = []string{"no-store"}
	headerNoSniff = []string{"nosniff"}
)

// writeBody answers with body, JSON ending in a newline, uncacheable.
func (s *Server) writeBody(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = headerJSON
	h["Cache-Control"] = headerNoStore
	h["X-Content-Type-Options"] = headerNoSniff
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
