package webhook

import (
	"errors"
	"strconv"
	"testing"
	"time"
)

// TestSignKnownVector pins the signature to what the docs' openssl one-liner
// computes:
//
//	printf '1700000000.{"id":"evt_1"}' | openssl dgst -sha256 -hmac 'whsec_fake'
func TestSignKnownVector(t *testing.T) {
	got := Sign([]byte("whsec_fake"), time.Unix(1700000000, 0), []byte(`{"id":"evt_1"}`))
	want := "t=1700000000,v1=a03d3a96c113e2353f325d5ef01648cf19f8343abd745ed5d00220dd8fe27cdc"
	if got != want {
		t.Errorf("Sign = %s, want %s", got, want)
	}
}

func TestVerify(t *testing.T) {
	secret := []byte("whsec_fake_secret")
	body := []byte(`{"id":"evt_1","type":"connection.reauth_required"}`)
	at := time.Unix(1700000000, 0)
	good := Sign(secret, at, body)
	other := Sign([]byte("whsec_other_secret"), at, body)
	ts := strconv.FormatInt(at.Unix(), 10)
	tests := []struct {
		name   string
		secret []byte
		header string
		body   []byte
		now    time.Time
		want   error
	}{
		{"valid", secret, good, body, at, nil},
		{"valid within tolerance", secret, good, body, at.Add(4 * time.Minute), nil},
		{"body tampered", secret, good, []byte(`{"id":"evt_1","type":"connection.recovered"}`), at, ErrBadSignature},
		{"body extended", secret, good, append(append([]byte{}, body...), ' '), at, ErrBadSignature},
		{"timestamp changed", secret, "t=" + strconv.FormatInt(at.Unix()+1, 10) + good[len("t="+ts):], body, at, ErrBadSignature},
		{"wrong secret", []byte("whsec_wrong"), good, body, at, ErrBadSignature},
		{"signed by another secret", secret, other, body, at, ErrBadSignature},
		{"one of two signatures matches (rotation)", secret, other + "," + good[len("t="+ts)+1:], body, at, nil},
		{"too old", secret, good, body, at.Add(6 * time.Minute), ErrStale},
		{"from the future", secret, good, body, at.Add(-6 * time.Minute), ErrStale},
		{"empty header", secret, "", body, at, ErrNoSignature},
		{"no timestamp", secret, good[len("t="+ts)+1:], body, at, ErrNoSignature},
		{"no v1", secret, "t=" + ts, body, at, ErrNoSignature},
		{"v1 not hex", secret, "t=" + ts + ",v1=zz", body, at, ErrNoSignature},
		{"v1 truncated", secret, good[:len(good)-2], body, at, ErrNoSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(tc.secret, tc.header, tc.body, tc.now, 0)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}
