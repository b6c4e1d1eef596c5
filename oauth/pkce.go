package oauth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
)

// pkceVerifierBytes of randomness make a 43-character verifier, the shortest
// RFC 7636 §4.1 allows, with the 256 bits of entropy it recommends.
const pkceVerifierBytes = 32

// NewPKCE returns a fresh PKCE code verifier (RFC 7636 §4.1: 43 characters
// of base64url from crypto/rand) and its S256 code challenge (§4.2). Send
// the challenge with [Endpoint.AuthCodeURL], keep the verifier server-side,
// and pass it to [Endpoint.Exchange].
func NewPKCE() (verifier, challenge string, err error) {
	verifier, err = randomToken(pkceVerifierBytes)
	if err != nil {
		return "", "", fmt.Errorf("oauth: pkce: %w", err)
	}
	return verifier, S256Challenge(verifier), nil
}

// S256Challenge returns the S256 code challenge of a PKCE verifier:
// BASE64URL-ENCODE(SHA256(ASCII(code_verifier))), RFC 7636 §4.2.
func S256Challenge(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// NewState returns a fresh, unguessable value for the state parameter of an
// authorization request, which binds the callback to the session that
// started it (RFC 6749 §10.12): 256 bits from crypto/rand, base64url.
func NewState() (string, error) {
	s, err := randomToken(32)
	if err != nil {
		return "", fmt.Errorf("oauth: state: %w", err)
	}
	return s, nil
}

func randomToken(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
