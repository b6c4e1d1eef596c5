package provider

import (
	"errors"
	"maps"
	"slices"
)

// Catalog is the set of active provider profiles, by name. It is immutable
// and safe for concurrent use; [Catalog.Get] hands out copies.
type Catalog struct {
	profiles map[string]Profile
}

// NewCatalog fills in defaults ([Profile.WithDefaults]) and validates every
// profile. It returns all problems found, joined, each a [*FieldError];
// a name used twice is one of them.
func NewCatalog(profiles []Profile) (*Catalog, error) {
	c := &Catalog{profiles: make(map[string]Profile, len(profiles))}
	var errs []error
	for _, p := range profiles {
		p = p.WithDefaults()
		if err := p.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		if _, dup := c.profiles[p.Name]; dup {
			errs = append(errs, &FieldError{Provider: p.Name, Field: "name", Problem: "duplicate provider name"})
			continue
		}
		c.profiles[p.Name] = p
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// Get returns a copy of the named profile.
func (c *Catalog) Get(name string) (Profile, bool) {
	if c == nil {
		return Profile{}, false
	}
	p, ok := c.profiles[name]
	return p.Clone(), ok
}

// Names returns the names of the profiles in the catalog, sorted.
func (c *Catalog) Names() []string {
	if c == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(c.profiles))
}
