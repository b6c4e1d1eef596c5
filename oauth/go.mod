module github.com/tokenbroker/tokenbroker/oauth

// The oldest Go release still supported upstream (1.26; 1.27 is current).
go 1.26.0

require golang.org/x/sync v0.24.0
