package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Header names. Receivers deduplicate on [HeaderEventID]: delivery is at
// least once.
const (
	HeaderSignature = "Tokenbroker-Signature"
	HeaderEventID   = "Tokenbroker-Event-Id"
	HeaderEventType = "Tokenbroker-Event-Type"
	// HeaderAttempt numbers the deliveries of one event to one endpoint,
	// from 1.
	HeaderAttempt = "Tokenbroker-Delivery-Attempt"
)

// DefaultTolerance is how far a signature's timestamp may be from the
// receiver's clock in [Verify]: it bounds how long a captured request can
// be replayed.
const DefaultTolerance = 5 * time.Minute

// Errors from [Verify].
var (
	ErrNoSignature  = errors.New("webhook: no valid signature header")
	ErrBadSignature = errors.New("webhook: signature does not match")
	ErrStale        = errors.New("webhook: signature timestamp outside the tolerance")
)

// Sign returns the [HeaderSignature] value for body sent at t:
// "t=<unix seconds>,v1=<hex HMAC-SHA256 of "<unix seconds>.<body>">". The
// timestamp is inside the MAC so that a receiver rejecting old timestamps
// also rejects replays.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verify checks a [HeaderSignature] value against body and secret, and
// that its timestamp is within tolerance of now (DefaultTolerance when
// tolerance is zero). Any one of several v1 entries may match, so a sender
// can sign with an old and a new secret while they are rotated. Receivers
// must verify the raw body, before parsing it.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	var (
		ts   string
		sigs [][]byte
	)
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			if b, err := hex.DecodeString(v); err == nil && len(b) == sha256.Size {
				sigs = append(sigs, b)
			}
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrNoSignature
	}
	want := mac(secret, ts, body)
	matched := false
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			matched = true
		}
	}
	if !matched {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: signed %s from now", ErrStale, d.Round(time.Second))
	}
	return nil
}
