package fakeclock

import (
	"testing"
	"time"
)

func TestClock(t *testing.T) {
	start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	c := New(start)
	if !c.Now().Equal(start) {
		t.Fatalf("Now = %v, want %v", c.Now(), start)
	}
	c.Advance(time.Hour)
	if got := c.Now().Sub(start); got != time.Hour {
		t.Fatalf("after Advance(1h) the clock moved %v", got)
	}
}

func TestOffset(t *testing.T) {
	var c Offset
	c.Advance(24 * time.Hour)
	if d := time.Until(c.Now()); d < 23*time.Hour || d > 25*time.Hour {
		t.Fatalf("Offset after Advance(24h) is %v ahead of the wall clock", d)
	}
}
