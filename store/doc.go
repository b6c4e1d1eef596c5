// Package store defines how tokenbroker keeps connections: one [Store]
// interface, sentinel errors, and compare-and-swap updates on a version.
//
// Backends live in sub-packages (sqlite, postgres) and must pass the
// conformance suite in storetest. Token values reach a Store already sealed
// (encrypted): the Store never sees plaintext tokens and never decides that a
// row has expired. Access and refresh tokens have independent lifetimes, so
// no backend deletes or hides a connection because its access token expired.
package store
