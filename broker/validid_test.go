package broker

import (
	"regexp"
	"strings"
	"testing"
)

// TestValidIDMatchesPattern holds ValidID's loop to the rule it is
// documented as.
func TestValidIDMatchesPattern(t *testing.T) {
	pattern := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$`)
	ids := []string{"", "a", "A", "0", "c1", "user@example.com", "a.b_c:d-e", ".a", "_a", "-a", ":a", "@a",
		"a b", "a/b", "a%2F", "é", "a\x00", "a\n", "a?", "a#", "a+b", "a~", strings.Repeat("a", 200),
		strings.Repeat("a", 201), "a" + strings.Repeat("-", 199), "a" + strings.Repeat("-", 200)}
	for c := range 256 {
		ids = append(ids, string([]byte{byte(c)}), "a"+string([]byte{byte(c)}))
	}
	for _, id := range ids {
		if got, want := ValidID(id), pattern.MatchString(id); got != want {
			t.Errorf("ValidID(%q) = %v, the pattern says %v", id, got, want)
		}
	}
}

// FuzzValidID compares ValidID with the pattern on arbitrary input.
func FuzzValidID(f *testing.F) {
	pattern := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$`)
	f.Add("c1")
	f.Add("a@b")
	f.Fuzz(func(t *testing.T, id string) {
		if got, want := ValidID(id), pattern.MatchString(id); got != want {
			t.Errorf("ValidID(%q) = %v, the pattern says %v", id, got, want)
		}
	})
}
