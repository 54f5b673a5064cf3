// Package apns sends pushes to Apple devices through the APNs HTTP/2
// provider API, on github.com/sideshow/apns2 (the only package of sipwake
// that imports it).
//
// Authentication is by provider token (a .p8 signing key: KeyFile, KeyID,
// TeamID) or by certificates (PEM files holding a certificate and its
// key). The provider token is a JWT that apns2's token package signs once
// and reuses until it is token.TokenTimeout (50 minutes) old, inside the
// hour Apple accepts and well apart from Apple's limit on how often a
// provider may renew it. A certificate serves the topics it names (its
// subject UID and Apple's topics extension); one that names none is used
// for any topic.
//
// A target with provider "apns.dev" goes to the sandbox URL, "apns" to
// production. There is one HTTP/2 client per base URL and credential,
// created by New and reused for every push, as Apple asks.
package apns
