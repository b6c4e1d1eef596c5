package broker

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/tokenbroker/tokenbroker/store"
)

// unknownProvider is the error for a provider name that is not configured.
// It names the configured providers and says where they come from, so a
// first call with a provider nobody configured (the quick tour's "github"
// on a server started without a config) teaches rather than puzzles. Only
// names are listed: they are not secret, and every API key may import.
func (b *Broker) unknownProvider(name string) error {
	// MCP connections are not a provider one can import into.
	names := slices.DeleteFunc(slices.Sorted(maps.Keys(b.providers)), func(n string) bool { return n == store.ProviderMCP })
	var configured string
	if len(names) == 0 {
		configured = "no providers are configured"
	} else {
		configured = "configured: " + strings.Join(names, ", ")
	}
	return &ValidationError{"provider", fmt.Sprintf("unknown provider %q (%s); providers are added under providers: in the config file passed with --config, see config/example.yaml", name, configured)}
}
