package store

import "testing"

func TestStatusValid(t *testing.T) {
	for _, tc := range []struct {
		s    Status
		want bool
	}{
		{StatusActive, true},
		{StatusNeedsReauth, true},
		{StatusRevoked, true},
		{"", false},
		{"refreshing", false}, // the lease, not a status
		{"ACTIVE", false},
	} {
		if got := tc.s.Valid(); got != tc.want {
			t.Errorf("Status(%q).Valid() = %v, want %v", tc.s, got, tc.want)
		}
	}
}
