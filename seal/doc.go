// Package seal encrypts token values at rest.
//
// A [KeyRing] holds one or more AES-256 keys, each with a short id. The first
// key (the primary) seals new values; every key opens. Each sealed value
// carries the id of the key that sealed it, so keys can be rotated without
// re-encrypting everything at once: [Rotate] prepends a fresh primary to the
// key file, old values keep opening under their old key, and a background job
// can re-seal, at its own pace, the values whose [KeyRing.KeyID] is not the
// [KeyRing.PrimaryID].
//
// Sealed format (version 1):
//
//	1 byte   version (1)
//	1 byte   key id length n
//	n bytes  key id
//	12 bytes nonce (random)
//	rest     AES-GCM ciphertext and 16-byte tag
//
// The header (version, key id) and the caller's additional data are both
// authenticated. The additional data binds a ciphertext to where it belongs
// (the broker passes "conn:<id>:access" and the like), so a value copied
// into another row or field fails to open with [ErrCorrupt].
//
// Nonces are random (96 bits); NIST SP 800-38D §8.3 bounds one key to 2^32
// random-nonce encryptions, far above what a token store writes between
// rotations, but it is one more reason to rotate keys now and then.
//
// Key file format: one key per line, "<key-id> <base64 of 32 bytes>"; the
// first key line is the primary; blank lines and lines starting with '#' are
// ignored. The file must not be readable by group or others.
//
// Rotation with several replicas: a replica that has not reloaded the key
// file cannot open values sealed under a key it has never seen
// ([ErrUnknownKey]). Distribute the rotated file to every replica and restart
// them together, or restart them all before any of them seals under the new
// primary.
package seal
