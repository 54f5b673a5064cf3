// Package pushhttp holds what the push adapters (push/apns, push/fcm,
// push/webhook) share about HTTP: the TLS client configuration with the
// operator's extra CA (push.ca_file), transports, Retry-After parsing and
// the classification of transport failures into *push.Error.
package pushhttp
