package ui

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

const (
	sessionCookie = "tokenbroker_session"
	// signinCookie holds the pre-session secret that the sign-in form's
	// token is bound to, so a third-party page cannot sign a browser in
	// under the attacker's key (login CSRF).
	signinCookie = "tokenbroker_signin"
	signinTTL    = time.Hour
	csrfField    = "csrf"
	cookiePath   = "/ui"

	// The API key format of the server package: "tbk_" and base64url; the
	// bound keeps an absurd paste from being hashed.
	apiKeyPrefix = "tbk_"
	maxAPIKeyLen = 256
	adminScope   = "admin"

	maxCookieLen = 1024
	minKeyLen    = 32
)

// Labels keep the MACs of different things apart under one key.
const (
	labelSession = "session"
	labelCSRF    = "csrf"
	labelSignin  = "signin-csrf"
)

var errNoSession = errors.New("ui: no valid session")

type sessionKey struct{}

// session is a signed-in operator.
type session struct {
	KeyID   string
	KeyName string
	Expires time.Time
	cookie  string // the cookie value the form tokens are bound to
	mac     []byte // the ring key that verified it
	// id names the server-side record (store.UISession): the SHA-256 of
	// the cookie's nonce.
	id string
}

// sessionID is the stored id of a session whose cookie has this nonce.
func sessionID(nonce string) string {
	sum := sha256.Sum256([]byte("tokenbroker-ui-session:" + nonce))
	return hex.EncodeToString(sum[:])
}

func sessionFrom(r *http.Request) *session {
	s, _ := r.Context().Value(sessionKey{}).(*session)
	return s
}

func checkKeys(keys [][]byte) error {
	if len(keys) == 0 {
		return errors.New("ui: SessionKeys returned no keys")
	}
	for i, k := range keys {
		if len(k) < minKeyLen {
			return fmt.Errorf("ui: session key %d is %d bytes, want at least %d", i, len(k), minKeyLen)
		}
	}
	return nil
}

var b64 = base64.RawURLEncoding

func mac(key []byte, label, payload string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	m.Write([]byte{0})
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// verify returns the key under which sig is payload's MAC, or nil.
func (h *Handler) verify(label, payload, sig string) []byte {
	got, err := b64.DecodeString(sig)
	if err != nil || len(got) != sha256.Size {
		return nil
	}
	for _, k := range h.sessionKeys() {
		if len(k) >= minKeyLen && hmac.Equal(got, mac(k, label, payload)) {
			return k
		}
	}
	return nil
}

func (h *Handler) signingKey() ([]byte, error) {
	keys := h.sessionKeys()
	if err := checkKeys(keys); err != nil {
		return nil, err
	}
	return keys[0], nil
}

func randomString(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("ui: random: %w", err)
	}
	return b64.EncodeToString(b), nil
}

// newSession makes the cookie value for a session of key id until exp:
// "v1.<id>.<expiry unix>.<nonce>.<mac>", id and nonce base64url. The nonce
// makes every sign-in's cookie, and so its form token, different, and
// names the session's server-side record, which is stored here: a cookie
// is only good while its record exists (docs/security.md).
func (h *Handler) newSession(ctx context.Context, keyID string, exp time.Time) (string, error) {
	key, err := h.signingKey()
	if err != nil {
		return "", err
	}
	nonce, err := randomString(16)
	if err != nil {
		return "", err
	}
	if err := h.keys.CreateUISession(ctx, store.UISession{ID: sessionID(nonce), KeyID: keyID, CreatedAt: h.now(), ExpiresAt: exp}); err != nil {
		return "", fmt.Errorf("ui: store session: %w", err)
	}
	payload := "v1." + b64.EncodeToString([]byte(keyID)) + "." + strconv.FormatInt(exp.Unix(), 10) + "." + nonce
	return payload + "." + b64.EncodeToString(mac(key, labelSession, payload)), nil
}

// parseSession checks a cookie value's signature and expiry.
func (h *Handler) parseSession(value string, now time.Time) (*session, bool) {
	if len(value) > maxCookieLen {
		return nil, false
	}
	i := strings.LastIndexByte(value, '.')
	if i < 0 {
		return nil, false
	}
	payload, sig := value[:i], value[i+1:]
	key := h.verify(labelSession, payload, sig)
	if key == nil {
		return nil, false
	}
	parts := strings.Split(payload, ".")
	if len(parts) != 4 || parts[0] != "v1" {
		return nil, false
	}
	id, err := b64.DecodeString(parts[1])
	if err != nil || len(id) == 0 {
		return nil, false
	}
	unix, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil {
		return nil, false
	}
	exp := time.Unix(unix, 0)
	if !now.Before(exp) {
		return nil, false
	}
	return &session{KeyID: string(id), Expires: exp, cookie: value, mac: key, id: sessionID(parts[3])}, true
}

// session authenticates the request by its cookie and re-checks the API key
// behind it, so a revoked key's sessions end at once. It returns
// errNoSession, or the key store's error.
func (h *Handler) session(r *http.Request) (*session, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, errNoSession
	}
	s, ok := h.parseSession(c.Value, h.now())
	if !ok {
		return nil, errNoSession
	}
	// Signed is not enough: the session must not have been signed out.
	rec, err := h.keys.GetUISession(r.Context(), s.id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errNoSession
	}
	if err != nil {
		return nil, fmt.Errorf("ui: get session: %w", err)
	}
	if rec.KeyID != s.KeyID {
		return nil, errNoSession
	}
	keys, err := h.keys.ListAPIKeys(r.Context())
	if err != nil {
		return nil, fmt.Errorf("ui: list API keys: %w", err)
	}
	for _, k := range keys {
		if k.ID != s.KeyID {
			continue
		}
		if !k.RevokedAt.IsZero() || k.Scope != adminScope {
			return nil, errNoSession
		}
		s.KeyName = k.Name
		return s, nil
	}
	return nil, errNoSession
}

// csrfToken is the form token of a session: a MAC of its cookie, so it is
// only known to pages rendered for that session.
func csrfToken(s *session) string {
	return b64.EncodeToString(mac(s.mac, labelCSRF, s.cookie))
}

func (h *Handler) validCSRF(s *session, token string) bool {
	want := csrfToken(s)
	return token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(want)) == 1
}

// sameOrigin reports whether a POST came from a page of this server. A
// browser's Sec-Fetch-Site, where sent, must say same-origin; then the
// Origin header, or failing that the Referer, must name this host. A
// request with neither is refused: browsers send Origin with every form
// POST. Behind a reverse proxy the Host header must be passed through.
func sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default: // same-site, cross-site
		return false
	}
	src := r.Header.Get("Origin")
	if src == "" {
		src = r.Header.Get("Referer")
	}
	if src == "" || src == "null" {
		return false
	}
	u, err := url.Parse(src)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

// secureRequest reports whether cookies set in answer to r must be Secure:
// always when the dashboard is served over https (SecureCookies), when the
// request came over TLS here, or when a trusted proxy says it did.
func (h *Handler) secureRequest(r *http.Request) bool {
	if h.secure || r.TLS != nil {
		return true
	}
	return h.trustProto && strings.EqualFold(strings.TrimSpace(r.Header.Get("X-Forwarded-Proto")), "https")
}

// setCookie sets a dashboard cookie: HttpOnly, SameSite=Lax, scoped to
// /ui, Secure whenever the browser reaches us over https.
func (h *Handler) setCookie(w http.ResponseWriter, r *http.Request, name, value string, exp time.Time, maxAge time.Duration) {
	http.SetCookie(w, &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     cookiePath,
		Expires:  exp,
		MaxAge:   int(maxAge / time.Second),
		HttpOnly: true,
		Secure:   h.secureRequest(r),
		SameSite: http.SameSiteLaxMode,
	})
}

func (h *Handler) clearCookie(w http.ResponseWriter, r *http.Request, name string) {
	http.SetCookie(w, &http.Cookie{
		Name:     name,
		Value:    "",
		Path:     cookiePath,
		MaxAge:   -1,
		HttpOnly: true,
		Secure:   h.secureRequest(r),
		SameSite: http.SameSiteLaxMode,
	})
}

// signinToken returns the sign-in form's token, setting a fresh
// pre-session cookie when the browser has no valid one.
func (h *Handler) signinToken(w http.ResponseWriter, r *http.Request) (string, error) {
	key, err := h.signingKey()
	if err != nil {
		return "", err
	}
	if c, err := r.Cookie(signinCookie); err == nil && len(c.Value) <= maxCookieLen && c.Value != "" {
		// Keep the cookie, so a sign-in page open in another tab stays valid.
		return b64.EncodeToString(mac(key, labelSignin, c.Value)), nil
	}
	v, err := randomString(32)
	if err != nil {
		return "", err
	}
	now := h.now()
	h.setCookie(w, r, signinCookie, v, now.Add(signinTTL), signinTTL)
	return b64.EncodeToString(mac(key, labelSignin, v)), nil
}

func (h *Handler) validSigninToken(r *http.Request, token string) bool {
	c, err := r.Cookie(signinCookie)
	if err != nil || c.Value == "" || len(c.Value) > maxCookieLen {
		return false
	}
	return h.verify(labelSignin, c.Value, token) != nil
}

// errSignin is a sign-in refused for a reason the operator may read.
type errSignin struct {
	status int
	msg    string
}

func (e *errSignin) Error() string { return e.msg }

// checkAPIKey accepts an unrevoked admin API key.
func (h *Handler) checkAPIKey(r *http.Request, secret string) (store.APIKey, error) {
	secret = strings.TrimSpace(secret)
	if secret == "" {
		return store.APIKey{}, &errSignin{http.StatusBadRequest, "Enter an admin API key."}
	}
	if !strings.HasPrefix(secret, apiKeyPrefix) || len(secret) > maxAPIKeyLen {
		return store.APIKey{}, &errSignin{http.StatusUnauthorized, "That is not a tokenbroker API key: they start with " + apiKeyPrefix + "."}
	}
	// The same hash as the API's (server.HashAPIKey).
	sum := sha256.Sum256([]byte(secret))
	k, err := h.keys.GetAPIKeyByHash(r.Context(), sum[:])
	if errors.Is(err, store.ErrNotFound) {
		return store.APIKey{}, &errSignin{http.StatusUnauthorized, "The API key is not valid, or it was revoked."}
	}
	if err != nil {
		return store.APIKey{}, fmt.Errorf("ui: look up API key: %w", err)
	}
	if subtle.ConstantTimeCompare(k.Hash, sum[:]) != 1 || !k.RevokedAt.IsZero() {
		return store.APIKey{}, &errSignin{http.StatusUnauthorized, "The API key is not valid, or it was revoked."}
	}
	if k.Scope != adminScope {
		return store.APIKey{}, &errSignin{http.StatusForbidden, "Only admin API keys can sign in to the dashboard; this one has the " + k.Scope + " scope."}
	}
	return k, nil
}
