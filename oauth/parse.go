package oauth

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits applied to what providers send.
const (
	// maxParseBody bounds the answers the parsers read. A token response is
	// a few kilobytes; anything past a mebibyte is not one, whatever it says.
	maxParseBody = 1 << 20
	// maxTokenLifetime bounds expires_in and the refresh-token lifetimes:
	// ten years. Real lifetimes run from minutes to a year or two; beyond
	// ten years the number is garbage (or milliseconds taken for seconds
	// many times over), and a token believed valid for decades is never
	// refreshed.
	maxTokenLifetime = 10 * 365 * 24 * time.Hour
	// maxRetryAfterWait caps Retry-After. A provider asking for more than an
	// hour is not going to be waited on by a request in flight; the broker's
	// lifecycle schedules later attempts.
	maxRetryAfterWait = time.Hour
	// maxDescriptionBytes bounds the provider text kept in Error.Description.
	maxDescriptionBytes = 512
	// maxCodeBytes bounds an error code taken from a provider.
	maxCodeBytes = 64
	// maxJSONDepth is how deep jsonSecrets follows nesting; encoding/json
	// rejects bodies nested deeper than 10000.
	maxJSONDepth = 10000
	// minRedactLen is the shortest credential value scrubbed from error
	// text. No provider issues shorter tokens, and scrubbing shorter strings
	// would shred ordinary words (and our own "oauth:" prefix).
	minRedactLen = 8
)

// ParseOptions tunes [ParseTokenResponse].
type ParseOptions struct {
	// Op is put into Error.Op; "token" when empty.
	Op string
	// Now is when the response was received; expiries are computed from it.
	// Callers should always set it (from their injected clock); zero means
	// time.Now so that a forgotten clock cannot date a token in year 1 and
	// have it refreshed in a loop.
	Now time.Time
	// DefaultExpiresIn is the access token lifetime assumed when the
	// response carries none (or carries 0). Zero leaves the expiry unknown.
	// A defaulted expiry sets Token.ExpiryDefaulted.
	DefaultExpiresIn time.Duration
	// OnIgnored, if set, is told about an optional field that was present
	// but unusable and therefore ignored (a garbled
	// refresh_token_expires_in, say), so the caller can count or log it.
	// reason never contains the field's value.
	OnIgnored func(field, reason string)
}

// ParseTokenResponse turns one token-endpoint HTTP answer (RFC 6749 §5.1,
// §5.2) into a Token or an *Error. It never returns both, and never a Token
// without an access token.
//
// It accepts JSON (whatever the Content-Type says, as long as the body is a
// JSON object) and application/x-www-form-urlencoded answers (GitHub's and
// Facebook's classic form, also sent as text/plain). Rules beyond RFC 6749:
//
//   - A 2xx answer carrying an error (GitHub and Slack answer failed
//     refreshes with 200) is an *Error with the provider's code. A 2xx
//     answer without an access_token, an HTML page, an empty or unreadable
//     body are CodeInvalidResponse, transient.
//   - expires_in (or Facebook's expires) may be a number or a numeric
//     string; fractions ("3600.0") are accepted and truncated to whole
//     seconds. Negative, non-numeric, non-finite and values above ten years
//     make the whole answer CodeInvalidResponse. 0 (and anything under a
//     second) means "unknown", as in golang.org/x/oauth2, because providers
//     that send it do not mean "already expired", and reading it so would
//     refresh the connection in a loop: the DefaultExpiresIn applies.
//   - refresh_token_expires_in (GitHub), x_refresh_token_expires_in and
//     x_refresh_token_hard_expires_in (Intuit) follow the same number rules,
//     but a garbled value there is ignored (reported to OnIgnored) rather
//     than failing the answer: the answer may carry a rotated refresh token
//     whose predecessor is already revoked, and losing it costs the
//     connection, while an unknown refresh lifetime only costs a failed
//     refresh later. Garbled scope and id_token are ignored the same way.
//   - access_token and refresh_token must be strings of visible ASCII
//     (RFC 6749 Appendix A.12, A.17), token_type a plain name (A.13);
//     anything else is CodeInvalidResponse. token_type defaults to "Bearer"
//     and any spelling of "bearer" becomes "Bearer".
//   - scope may also be a JSON array of strings; it is joined with spaces.
//     Commas (GitHub) are left alone: they are legal inside a scope token.
//
// Non-2xx answers are handed to [ParseErrorResponse].
func ParseTokenResponse(status int, header http.Header, body []byte, opts ParseOptions) (*Token, error) {
	op := opts.Op
	if op == "" {
		op = "token"
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	if status < 200 || status > 299 {
		return nil, ParseErrorResponse(op, status, header, body, now)
	}
	r := decodeResponse(header, body)
	invalid := func(desc string) (*Token, error) {
		return nil, r.newError(op, status, header, now, CodeInvalidResponse, desc, "")
	}
	switch r.kind {
	case bodyTooLarge:
		return invalid("response body larger than 1 MiB")
	case bodyEmpty:
		return invalid("empty response body")
	case bodyMarkup:
		return invalid("HTML page instead of a token response")
	case bodyUnparsed:
		return invalid(r.problem)
	}
	pe := r.providerError()
	if pe.signalled {
		return nil, r.newError(op, status, header, now, pe.code, pe.description(), pe.uri)
	}
	if r.kind != bodyJSONObject && r.kind != bodyForm {
		return invalid("JSON response is not an object")
	}
	tok, problem := r.token(now, opts)
	if problem != "" {
		if problem == msgNoAccessToken {
			// A provider saying why it sent no token is worth passing on.
			if d := pe.description(); d != "" {
				problem += ": " + d
			}
		}
		return invalid(problem)
	}
	return tok, nil
}

// ParseErrorResponse builds the *Error for a failed answer from any OAuth
// endpoint (token, introspection, revocation, discovery).
//
// It reads the RFC 6749 §5.2 envelope ({"error", "error_description",
// "error_uri"}, as JSON or form), and the envelopes providers use instead:
// {"error":{"code","message"}}, {"errors":[{"code","message"}]},
// {"message"}, problem details (RFC 9457), Salesforce's
// [{"errorCode","message"}], Slack's {"ok":false,"error"}. A code found in a
// non-RFC envelope becomes Code only when it is an RFC code (or a provider
// alias of one, such as GitHub's bad_refresh_token for invalid_grant);
// otherwise it goes into the Description and the status decides. HTML, empty
// and unreadable bodies are classified by status alone.
//
// Code is the provider's (lower-cased) code, else "http_<status>", else
// CodeInvalidResponse for a 2xx. Kind is [ClassifyCode] of the code, except
// that 408, 429 and 5xx answers are always transient: a provider that is
// failing or throttling is not believed when it declares the grant dead. A
// bare 401 or 403 without a code is transient ("http_401"): it may come
// from a gateway rather than the authorization server, and the broker's
// lifecycle turns failures that persist into needs_reauth.
//
// Retry-After is honoured on any status (see [parseRetryAfter]).
// Description holds at most 512 bytes of the provider's text, without
// control characters and without any access_token, refresh_token, id_token,
// token or client_secret value found in the body.
func ParseErrorResponse(op string, status int, header http.Header, body []byte, now time.Time) *Error {
	if op == "" {
		op = "token"
	}
	r := decodeResponse(header, body)
	var code, desc, uri string
	switch r.kind {
	case bodyTooLarge:
		desc = "response body larger than 1 MiB; not read"
	case bodyMarkup:
		desc = "HTML page"
	case bodyUnparsed:
		desc = r.problem
	case bodyJSONObject, bodyJSONOther, bodyForm:
		pe := r.providerError()
		code, desc, uri = pe.code, pe.description(), pe.uri
	}
	return r.newError(op, status, header, now, code, desc, uri)
}

// parseRetryAfter reads Retry-After (RFC 9110 §10.2.3) as delta-seconds or
// an HTTP-date relative to now. It returns 0 when the header is absent,
// garbled, in the past, or a date while now is zero, and caps the wait at
// an hour.
func parseRetryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	var d time.Duration
	if isDigits(v) {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n > int64(maxRetryAfterWait/time.Second) {
			return maxRetryAfterWait // only overflow fails on digits
		}
		d = time.Duration(n) * time.Second
	} else {
		t, err := http.ParseTime(v)
		if err != nil || now.IsZero() {
			return 0
		}
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfterWait)
}

// NetworkError wraps a transport failure (no response arrived) as a
// transient *Error with Code [CodeNetwork]. err stays reachable through
// Unwrap, so errors.Is(e, context.Canceled) and context.DeadlineExceeded
// still match. The query, fragment and user info of a *url.Error's URL are
// dropped from the message: a misconfigured endpoint may carry credentials
// there.
func NetworkError(op string, err error) *Error {
	if op == "" {
		op = "token"
	}
	if ue, ok := err.(*url.Error); ok {
		if u, perr := url.Parse(ue.URL); perr == nil && (u.RawQuery != "" || u.Fragment != "" || u.User != nil) {
			u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment, u.User = "", false, "", "", nil
			err = &url.Error{Op: ue.Op, URL: u.String(), Err: ue.Err}
		}
	}
	return &Error{Op: op, Code: CodeNetwork, Kind: KindTransient, Err: err}
}

// bodyKind is what a response body turned out to be.
type bodyKind int

const (
	bodyEmpty      bodyKind = iota
	bodyJSONObject          // a JSON object
	bodyJSONOther           // valid JSON, not an object (Salesforce's error array)
	bodyForm                // application/x-www-form-urlencoded
	bodyMarkup              // HTML or XML: a gateway's or login page
	bodyUnparsed            // none of the above; problem says why
	bodyTooLarge
)

// decodedResponse is one response body, read once.
type decodedResponse struct {
	kind    bodyKind
	obj     map[string]any // bodyJSONObject; numbers are json.Number
	value   any            // bodyJSONOther
	form    url.Values     // bodyForm
	problem string         // bodyUnparsed: fixed text, no provider bytes
	secrets secretSet      // credential values found in the body
}

func decodeResponse(header http.Header, body []byte) *decodedResponse {
	if len(body) > maxParseBody {
		return &decodedResponse{kind: bodyTooLarge}
	}
	trimmed := bytes.TrimSpace(bytes.TrimPrefix(body, []byte("\xef\xbb\xbf")))
	if len(trimmed) == 0 {
		return &decodedResponse{kind: bodyEmpty}
	}
	mt, mtOK := mediaType(header)
	switch {
	case trimmed[0] == '{' || trimmed[0] == '[':
		// The body decides, not the Content-Type: providers label JSON as
		// text/html, text/plain and text/javascript.
		return decodeJSON(trimmed)
	case trimmed[0] == '<' || mt == "text/html" || mt == "application/xhtml+xml":
		return &decodedResponse{kind: bodyMarkup}
	case isJSONMediaType(mt):
		return &decodedResponse{kind: bodyUnparsed, problem: "malformed JSON body"}
	case mt == "application/x-www-form-urlencoded", mt == "text/plain", mt == "", mt == "application/octet-stream":
		form, err := url.ParseQuery(string(trimmed))
		if err != nil {
			return &decodedResponse{kind: bodyUnparsed, problem: "malformed form-encoded body"}
		}
		if mt != "application/x-www-form-urlencoded" && !form.Has("access_token") && !form.Has("error") {
			// Plain text that happens to parse as a form ("Bad Gateway").
			return &decodedResponse{kind: bodyUnparsed, problem: "body is neither JSON nor form-encoded"}
		}
		var secrets []string
		for k, vs := range form {
			if isSecretKey(k) {
				secrets = append(secrets, vs...)
			}
		}
		return &decodedResponse{kind: bodyForm, form: form, secrets: newSecretSet(secrets)}
	case mtOK:
		return &decodedResponse{kind: bodyUnparsed, problem: "unexpected content type " + mt}
	default:
		return &decodedResponse{kind: bodyUnparsed, problem: "unexpected content type"}
	}
}

func decodeJSON(body []byte) *decodedResponse {
	r := &decodedResponse{secrets: newSecretSet(jsonSecrets(body))}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		r.kind, r.problem = bodyUnparsed, "malformed JSON body"
		return r
	}
	if _, err := dec.Token(); err != io.EOF {
		r.kind, r.problem = bodyUnparsed, "malformed JSON body: data after the top-level value"
		return r
	}
	if m, ok := v.(map[string]any); ok {
		r.kind, r.obj = bodyJSONObject, m
	} else {
		r.kind, r.value = bodyJSONOther, v
	}
	return r
}

// mediaType returns the lower-cased media type of the Content-Type header
// and whether it was well formed.
func mediaType(header http.Header) (string, bool) {
	ct := header.Get("Content-Type")
	if ct == "" {
		return "", true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil || errors.Is(err, mime.ErrInvalidMediaParameter) {
		return mt, true
	}
	return "", false
}

func isJSONMediaType(mt string) bool {
	return mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}

// lookup returns a field's value: a string for forms, the decoded JSON value
// otherwise. Absent, null and empty form values count as missing.
func (r *decodedResponse) lookup(name string) (any, bool) {
	switch r.kind {
	case bodyJSONObject:
		v, ok := r.obj[name]
		return v, ok && v != nil
	case bodyForm:
		v := r.form.Get(name)
		return v, v != ""
	}
	return nil, false
}

const msgNoAccessToken = "no access_token in response"

// token builds the Token from a success body, or says what is wrong with it.
// A non-empty problem with a nil Token fails the whole answer.
func (r *decodedResponse) token(now time.Time, opts ParseOptions) (*Token, string) {
	ignored := func(field, reason string) {
		if opts.OnIgnored != nil {
			opts.OnIgnored(field, reason)
		}
	}
	tok := &Token{IssuedAt: now}

	at, present, problem := r.credential("access_token")
	switch {
	case problem != "":
		return nil, problem
	case !present:
		return nil, msgNoAccessToken
	}
	tok.AccessToken = at

	if tok.RefreshToken, _, problem = r.credential("refresh_token"); problem != "" {
		return nil, problem
	}

	tok.TokenType = "Bearer"
	if v, ok := r.lookup("token_type"); ok {
		s, isStr := v.(string)
		switch {
		case !isStr:
			return nil, "token_type is not a string"
		case !isTokenTypeName(s) && s != "":
			return nil, "token_type is not a valid type name"
		default:
			tok.TokenType = CanonicalTokenType(s)
		}
	}

	// RFC 6749 §5.1 expires_in; Facebook's classic answers say expires.
	// expires is only consulted when expires_in is absent, not when it is 0.
	field := "expires_in"
	life, present, problem := r.lifetime(field)
	if !present {
		field = "expires"
		life, _, problem = r.lifetime(field)
	}
	if problem != "" {
		return nil, field + " " + problem
	}
	switch {
	case life > 0:
		tok.Expiry = now.Add(life)
	case opts.DefaultExpiresIn > 0:
		tok.Expiry = now.Add(opts.DefaultExpiresIn)
		tok.ExpiryDefaulted = true
	}

	// Optional lifetimes of the refresh token: the first usable one wins.
	for _, name := range []string{"refresh_token_expires_in", "x_refresh_token_expires_in"} {
		life, _, problem := r.lifetime(name)
		if problem != "" {
			ignored(name, problem)
		} else if life > 0 && tok.RefreshExpiry.IsZero() {
			tok.RefreshExpiry = now.Add(life)
		}
	}
	if life, _, problem := r.lifetime("x_refresh_token_hard_expires_in"); problem != "" {
		ignored("x_refresh_token_hard_expires_in", problem)
	} else if life > 0 {
		tok.RefreshHardExpiry = now.Add(life)
	}

	if v, ok := r.lookup("scope"); ok {
		scope, reason := scopeValue(v)
		if reason != "" {
			ignored("scope", reason)
		}
		tok.Scope = scope
	}
	if v, ok := r.lookup("id_token"); ok {
		s, isStr := v.(string)
		switch {
		case !isStr:
			ignored("id_token", "is not a string")
		case !isVisibleASCII(s):
			ignored("id_token", "contains characters outside visible ASCII")
		default:
			tok.IDToken = s
		}
	}
	return tok, ""
}

// credential reads an access or refresh token: a string of RFC 6749
// VSCHARs (Appendix A.12, A.17). Anything else would either be rejected by
// net/http when sent or is not a token at all.
func (r *decodedResponse) credential(name string) (value string, present bool, problem string) {
	v, ok := r.lookup(name)
	if !ok {
		return "", false, ""
	}
	s, isStr := v.(string)
	switch {
	case !isStr:
		return "", true, name + " is not a string"
	case s == "":
		return "", false, ""
	case !isVisibleASCII(s) || strings.TrimSpace(s) == "":
		return "", true, name + " contains characters outside visible ASCII"
	}
	return s, true, ""
}

// lifetime reads a lifetime in seconds: a JSON number or a string holding
// one. present is false when the field is absent or null. The duration is
// truncated to whole seconds; 0 means unknown.
func (r *decodedResponse) lifetime(name string) (d time.Duration, present bool, problem string) {
	v, ok := r.lookup(name)
	if !ok {
		return 0, false, ""
	}
	var s string
	switch v := v.(type) {
	case json.Number:
		s = v.String()
	case string:
		if s = strings.TrimSpace(v); s == "" {
			return 0, false, "" // "" is as good as absent
		}
	default:
		return 0, true, "is not a number"
	}
	if !isDecimalNumber(s) {
		// Also rules out NaN, Inf, hexadecimal and underscores, which
		// strconv.ParseFloat would accept.
		return 0, true, "is not a number"
	}
	f, err := strconv.ParseFloat(s, 64)
	switch {
	case err != nil || math.IsInf(f, 0) || math.IsNaN(f):
		return 0, true, "is out of range"
	case f < 0:
		return 0, true, "is negative"
	case f > maxTokenLifetime.Seconds():
		return 0, true, "exceeds ten years"
	}
	return time.Duration(f) * time.Second, true, ""
}

// scopeValue reads scope as RFC 6749 §3.3 wants it (a space-separated
// string) or as a JSON array of strings, which some providers send.
func scopeValue(v any) (scope, reason string) {
	var parts []string
	switch v := v.(type) {
	case string:
		parts = strings.Fields(v)
	case []any:
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return "", "is a list with a non-string element"
			}
			parts = append(parts, strings.Fields(s)...)
		}
	default:
		return "", "is neither a string nor a list of strings"
	}
	scope = strings.Join(parts, " ")
	if !isVisibleASCII(scope) {
		return "", "contains characters outside visible ASCII"
	}
	return scope, ""
}

// providerErr is what a body says about a failure.
type providerErr struct {
	// signalled: the body declares itself an error (an error field, a
	// non-empty errors list, "ok": false), whatever else it carries.
	signalled bool
	// code is the normalized RFC 6749 §5.2 (or extension) code, "" if none.
	code string
	// labels are the provider's own names for the failure that are not
	// codes we can use: "OAuthException", "190", "INVALID_SESSION_ID", or
	// the original spelling of an aliased code.
	labels []string
	// message is the provider's human-readable text.
	message string
	uri     string
}

func (pe *providerErr) description() string {
	labels := strings.Join(pe.labels, " ")
	switch {
	case labels == "":
		return pe.message
	case pe.message == "":
		return labels
	}
	return labels + ": " + pe.message
}

func (pe *providerErr) label(s string) {
	s = strings.TrimSpace(s)
	if s != "" && len(pe.labels) < 4 && !slices.Contains(pe.labels, s) {
		pe.labels = append(pe.labels, truncateUTF8(s, maxCodeBytes))
	}
}

// addCode takes a provider's error code. A top-level RFC "error" may be any
// well-formed code (RFC 6749 §8.5 allows extensions); a code from another
// envelope is only trusted when it is one we know.
func (pe *providerErr) addCode(raw string, topLevel bool) {
	c := strings.ToLower(strings.TrimSpace(raw))
	if alias := codeAlias(c); alias != "" {
		pe.label(raw)
		c = alias
	}
	if pe.code == "" && isCodeSyntax(c) && (topLevel || knownCode(c)) {
		pe.code = c
		return
	}
	if c != pe.code {
		pe.label(raw)
	}
}

func (r *decodedResponse) providerError() providerErr {
	var pe providerErr
	switch r.kind {
	case bodyForm:
		if s := r.form.Get("error"); strings.TrimSpace(s) != "" {
			pe.signalled = true
			pe.addCode(s, true)
		}
		pe.message = r.form.Get("error_description")
		pe.uri = r.form.Get("error_uri")
	case bodyJSONObject:
		pe.fromObject(r.obj)
	case bodyJSONOther:
		// Salesforce's REST errors: [{"errorCode": …, "message": …}].
		if arr, ok := r.value.([]any); ok && len(arr) > 0 {
			if m, ok := arr[0].(map[string]any); ok {
				pe.fromNested(m)
				pe.signalled = pe.code != "" || len(pe.labels) > 0 || pe.message != ""
			}
		}
	}
	return pe
}

func (pe *providerErr) fromObject(m map[string]any) {
	switch v := m["error"].(type) {
	case string:
		if strings.TrimSpace(v) != "" {
			pe.signalled = true
			pe.addCode(v, true)
		}
	case map[string]any:
		// {"error": {"code": …, "message": …}}: Google APIs, Facebook, many
		// API gateways.
		pe.signalled = true
		pe.fromNested(v)
	case bool:
		pe.signalled = v
	}
	if errs, ok := m["errors"].([]any); ok && len(errs) > 0 {
		pe.signalled = true
		switch e := errs[0].(type) {
		case map[string]any:
			pe.fromNested(e)
		case string:
			pe.addCode(e, false)
		}
	}
	if ok, isBool := m["ok"].(bool); isBool && !ok {
		pe.signalled = true // Slack
	}
	if s := stringField(m, "error_description"); s != "" {
		pe.message = s
	} else if pe.message == "" {
		pe.message = stringField(m, "message", "error_message", "detail", "title")
	}
	pe.uri = stringField(m, "error_uri")
}

// fromNested reads one error object of a non-RFC envelope.
func (pe *providerErr) fromNested(m map[string]any) {
	for _, k := range []string{"type", "status"} {
		if s, ok := m[k].(string); ok {
			pe.label(s)
		}
	}
	for _, k := range []string{"code", "errorCode", "error_code", "error"} {
		switch v := m[k].(type) {
		case string:
			if strings.TrimSpace(v) != "" {
				pe.addCode(v, false)
			}
		case json.Number:
			pe.label(v.String())
		}
	}
	if pe.message == "" {
		pe.message = stringField(m, "error_description", "message", "detail", "description", "title")
	}
}

// stringField returns the first non-empty string among m's keys.
func stringField(m map[string]any, keys ...string) string {
	for _, k := range keys {
		if s, ok := m[k].(string); ok && strings.TrimSpace(s) != "" {
			return s
		}
	}
	return ""
}

// newError builds the *Error for a failed answer and makes it safe to show.
// code is the provider's code or one of ours; "" means "classify by status".
func (r *decodedResponse) newError(op string, status int, header http.Header, now time.Time, code, desc, uri string) *Error {
	e := &Error{
		Op:          op,
		StatusCode:  status,
		Code:        code,
		Description: r.secrets.safeText(desc),
		URI:         r.secrets.safeURI(uri),
		RetryAfter:  parseRetryAfter(header, now),
	}
	if r.secrets.leaksFold(e.Code) {
		e.Code = "" // a provider echoing a credential as its error code
	}
	if e.Code == "" {
		e.Code = statusCode(status)
	}
	e.Kind = classify(status, e.Code)
	// Last line of defence: a credential spread over two parts of the
	// message (code and description, say).
	if r.secrets.leaks(e.Error()) {
		e.Description, e.URI = "", ""
	}
	if r.secrets.leaks(e.Error()) {
		e.Code = statusCode(status)
		e.Kind = classify(status, e.Code)
	}
	return e
}

// statusCode is the Code of an answer whose body named no failure.
func statusCode(status int) string {
	if status < 100 || status > 599 || status/100 == 2 {
		return CodeInvalidResponse
	}
	return "http_" + strconv.Itoa(status)
}

// classify decides a failure's Kind from its status and code.
func classify(status int, code string) Kind {
	if status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500 {
		return KindTransient
	}
	if code == CodeInvalidResponse || strings.HasPrefix(code, "http_") {
		return KindTransient
	}
	return ClassifyCode(code)
}

// knownCode reports whether c is an error code from the OAuth
// specifications, so it can be trusted when found in a non-RFC envelope.
func knownCode(c string) bool {
	switch c {
	case "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
		"unsupported_grant_type", "invalid_scope", "access_denied",
		"unsupported_response_type", "server_error", "temporarily_unavailable", // RFC 6749
		"invalid_token", "insufficient_scope", // RFC 6750
		"unsupported_token_type",                              // RFC 7009
		"authorization_pending", "slow_down", "expired_token", // RFC 8628
		"invalid_dpop_proof", "use_dpop_nonce", // RFC 9449
		"interaction_required", "login_required", "consent_required", // OpenID Connect Core §3.1.2.6
		"account_selection_required", "invalid_request_uri", "invalid_request_object":
		return true
	}
	return ClassifyCode(c) == KindTerminal
}

// codeAlias maps providers' own names for RFC failures to the RFC code, so
// that a dead grant is recognised as one. The original name is kept in the
// Description.
func codeAlias(c string) string {
	switch c {
	case "bad_refresh_token", // GitHub: refresh token expired, revoked or already used
		"bad_verification_code", // GitHub: authorization code wrong or expired
		"invalid_refresh_token": // Slack
		return "invalid_grant"
	case "incorrect_client_credentials", // GitHub
		"invalid_client_id", "bad_client_secret": // Slack
		return "invalid_client"
	}
	return ""
}

// isCodeSyntax reports whether c (lower-cased) can serve as an error code:
// a letter, then letters, digits, '_', '.', '-'. RFC 6749 allows more
// (any NQSCHAR), but a Code is shown to callers and stored; text that does
// not fit ("Access Denied") goes into the Description instead.
func isCodeSyntax(c string) bool {
	if c == "" || len(c) > maxCodeBytes || c[0] < 'a' || c[0] > 'z' {
		return false
	}
	for i := 0; i < len(c); i++ {
		b := c[i]
		if !('a' <= b && b <= 'z' || '0' <= b && b <= '9' || b == '_' || b == '.' || b == '-') {
			return false
		}
	}
	return true
}

// isTokenTypeName checks RFC 6749 Appendix A.13 type-name, plus the
// characters of an absolute URI for extension types.
func isTokenTypeName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || strings.IndexByte("-._~:/+#", b) >= 0) {
			return false
		}
	}
	return true
}

// isVisibleASCII reports whether s holds only RFC 6749 VSCHARs (%x20-7E).
func isVisibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// isDecimalNumber reports whether s is a JSON number (RFC 8259 §6), except
// that leading zeros are allowed: -?digits(.digits)?([eE][+-]?digits)?
func isDecimalNumber(s string) bool {
	s = strings.TrimPrefix(s, "-")
	digits := func() bool {
		n := 0
		for n < len(s) && '0' <= s[n] && s[n] <= '9' {
			n++
		}
		s = s[n:]
		return n > 0
	}
	if !digits() {
		return false
	}
	if strings.HasPrefix(s, ".") {
		s = s[1:]
		if !digits() {
			return false
		}
	}
	if s != "" && (s[0] == 'e' || s[0] == 'E') {
		s = s[1:]
		if s != "" && (s[0] == '+' || s[0] == '-') {
			s = s[1:]
		}
		if !digits() {
			return false
		}
	}
	return s == ""
}

// isSecretKey reports whether a field of that name holds a credential whose
// value must never reach an error message.
func isSecretKey(k string) bool {
	switch strings.ToLower(k) {
	case "access_token", "refresh_token", "id_token", "token", "client_secret":
		return true
	}
	return false
}

// jsonSecrets collects the string values of credential fields at any depth
// of a JSON body, duplicates included (encoding/json would keep only the
// last of a repeated key). It reads as far as the body is well formed.
func jsonSecrets(body []byte) []string {
	type frame struct {
		object, wantKey bool
		key             string
	}
	var (
		stack []frame
		out   []string
	)
	dec := json.NewDecoder(bytes.NewReader(body))
	for {
		t, err := dec.Token()
		if err != nil {
			return out
		}
		var top *frame
		if n := len(stack); n > 0 {
			top = &stack[n-1]
		}
		if d, ok := t.(json.Delim); ok {
			switch d {
			case '{', '[':
				if len(stack) >= maxJSONDepth {
					return out // encoding/json refuses such a body anyway
				}
				if top != nil && top.object {
					top.wantKey = true // the container is this key's value
				}
				stack = append(stack, frame{object: d == '{', wantKey: true})
			default:
				stack = stack[:len(stack)-1]
			}
			continue
		}
		if top == nil || !top.object {
			continue
		}
		if top.wantKey {
			top.key, _ = t.(string)
			top.wantKey = false
			continue
		}
		if s, ok := t.(string); ok && isSecretKey(top.key) {
			out = append(out, s)
		}
		top.wantKey = true
	}
}

// secretSet holds credential values to keep out of error text, longest
// first so that a secret containing another is scrubbed whole.
type secretSet []string

// newSecretSet keeps each value long enough to matter, as sent and as
// cleanText would render it, once.
func newSecretSet(values []string) secretSet {
	seen := make(map[string]bool, len(values))
	var s secretSet
	for _, v := range values {
		for _, form := range []string{v, cleanText(v)} {
			if len(form) >= minRedactLen && !seen[form] {
				seen[form] = true
				s = append(s, form)
			}
		}
	}
	slices.SortFunc(s, func(a, b string) int { return len(b) - len(a) })
	return s
}

func (s secretSet) leaks(text string) bool {
	for _, v := range s {
		if strings.Contains(text, v) {
			return true
		}
	}
	return false
}

// leaksFold is leaks for text that was case-folded (error codes).
func (s secretSet) leaksFold(text string) bool {
	text = strings.ToLower(text)
	for _, v := range s {
		if strings.Contains(text, strings.ToLower(v)) {
			return true
		}
	}
	return false
}

// safeText cleans provider text for an error message: control and format
// characters become spaces, credentials from the body are replaced, and the
// result is cut to maxDescriptionBytes. Cleaning comes first so that a
// credential split by a control character is still recognised, and
// truncation last so that it cannot leave a credential's head behind.
func (s secretSet) safeText(text string) string {
	text = cleanText(text)
	for _, v := range s {
		text = strings.ReplaceAll(text, v, "[redacted]")
	}
	if s.leaks(text) {
		return "" // a replacement built a credential anew; say nothing
	}
	return truncateUTF8(text, maxDescriptionBytes)
}

// safeURI keeps error_uri only when it is an absolute http(s) URL (RFC 6749
// §5.2 wants a web page for developers; a javascript: URI rendered as a link
// on the dashboard would be an attack) that carries no credential.
func (s secretSet) safeURI(uri string) string {
	uri = strings.TrimSpace(uri)
	if uri == "" || len(uri) > maxDescriptionBytes || !isVisibleASCII(uri) || strings.ContainsAny(uri, ` "<>\\`) || s.leaks(uri) {
		return ""
	}
	u, err := url.Parse(uri)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return ""
	}
	return uri
}

// cleanText makes text printable on one line: invalid UTF-8, control and
// format characters (bidi overrides, zero-width) and runs of white space
// become single spaces; the ends are trimmed.
func cleanText(s string) string {
	var b strings.Builder
	pending := false
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		if unicode.IsControl(r) || unicode.IsSpace(r) || unicode.Is(unicode.Cf, r) {
			pending = true
			continue
		}
		if pending && b.Len() > 0 {
			b.WriteByte(' ')
		}
		pending = false
		b.WriteRune(r)
	}
	return b.String()
}

// truncateUTF8 cuts s to at most n bytes on a rune boundary, marking the cut.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// Scrub returns text with every one of secrets (values of at least 8 bytes,
// as given and as error text would render them) replaced by "[redacted]".
// It is for provider error text kept beside the tokens it may echo.
func Scrub(text string, secrets ...string) string {
	return newSecretSet(secrets).safeText(text)
}
