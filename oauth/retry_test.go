package oauth

import (
	"math"
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Max: 1 * time.Second}
	tests := []struct {
		name    string
		b       Backoff
		attempt int
		rnd     float64
		want    time.Duration
	}{
		{"first retry, rnd 0", b, 0, 0, 0},
		{"first retry, half", b, 0, 0.5, 50 * time.Millisecond},
		{"second retry doubles the cap", b, 1, 0.5, 100 * time.Millisecond},
		{"third retry", b, 2, 0.5, 200 * time.Millisecond},
		{"cap reached", b, 4, 0.5, 500 * time.Millisecond}, // 1.6s capped at 1s
		{"negative attempt is the first", b, -3, 0.5, 50 * time.Millisecond},
		{"rnd just below 1 stays below the cap", b, 10, math.Nextafter(1, 0), time.Second - 1},
		{"rnd 1 is clamped below the cap", b, 0, 1, 100*time.Millisecond - 1},
		{"negative rnd is 0", b, 3, -0.5, 0},
		{"NaN rnd is 0", b, 3, math.NaN(), 0},
		{"zero Backoff uses defaults", Backoff{}, 0, 0.5, DefaultBackoffBase / 2},
		{"defaults cap at 10s", Backoff{}, 30, 0.5, DefaultBackoffMax / 2},
		{"Base above Max is capped", Backoff{Base: time.Minute, Max: time.Second}, 0, 0.5, 500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.b.Delay(tt.attempt, tt.rnd); got != tt.want {
				t.Errorf("Delay(%d, %v) = %v, want %v", tt.attempt, tt.rnd, got, tt.want)
			}
		})
	}
}

func TestBackoffDelayWithinFullJitterBounds(t *testing.T) {
	backoffs := []Backoff{
		{},
		{Base: time.Nanosecond, Max: time.Duration(math.MaxInt64)},
		{Base: time.Hour, Max: time.Duration(math.MaxInt64)},
		{Base: 250 * time.Millisecond, Max: 10 * time.Second},
	}
	rnds := []float64{0, 1e-9, 0.25, 0.5, 0.999999, math.Nextafter(1, 0)}
	for _, b := range backoffs {
		bd := b.withDefaults()
		for attempt := 0; attempt <= 200; attempt++ {
			// The cap: min(Max, Base·2^attempt), computed without overflow.
			capF := math.Min(float64(bd.Max), float64(bd.Base)*math.Pow(2, float64(attempt)))
			for _, rnd := range rnds {
				d := b.Delay(attempt, rnd)
				if d < 0 || float64(d) >= capF {
					t.Fatalf("%+v.Delay(%d, %v) = %v, outside [0, %v)", b, attempt, rnd, d, time.Duration(capF))
				}
			}
		}
	}
}

func TestBackoffDelayGrowsThenSaturates(t *testing.T) {
	b := Backoff{Base: 10 * time.Millisecond, Max: time.Second}
	prev := time.Duration(-1)
	for attempt := 0; attempt < 100; attempt++ {
		d := b.Delay(attempt, math.Nextafter(1, 0))
		if d < prev {
			t.Fatalf("upper bound shrank at attempt %d: %v after %v", attempt, d, prev)
		}
		prev = d
	}
	if prev != time.Second-1 {
		t.Errorf("upper bound after many attempts = %v, want just under Max", prev)
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		e    Error
		want bool
	}{
		{Error{Code: CodeNetwork, Kind: KindTransient}, true},
		{Error{StatusCode: 500, Code: "server_error", Kind: KindTransient}, true},
		{Error{StatusCode: 503, Code: "http_503", Kind: KindTransient}, true},
		{Error{StatusCode: 408, Code: "http_408", Kind: KindTransient}, true},
		{Error{StatusCode: 429, Code: "http_429", Kind: KindTransient}, true},
		{Error{StatusCode: 200, Code: CodeInvalidResponse, Kind: KindTransient}, true},
		{Error{StatusCode: 200, Code: "slow_down", Kind: KindTransient}, false},
		{Error{StatusCode: 400, Code: "invalid_request", Kind: KindTransient}, false},
		{Error{StatusCode: 401, Code: "http_401", Kind: KindTransient}, false},
		{Error{StatusCode: 400, Code: "invalid_grant", Kind: KindTerminal}, false},
		{Error{StatusCode: 503, Code: "invalid_client", Kind: KindTerminal}, false},
	}
	for _, tt := range tests {
		if got := retryable(&tt.e); got != tt.want {
			t.Errorf("retryable(%d %s %v) = %v, want %v", tt.e.StatusCode, tt.e.Code, tt.e.Kind, got, tt.want)
		}
	}
}
