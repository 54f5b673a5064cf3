// Package push sends push notifications that wake mobile apps: the
// Notifier interface, push targets, the payloads apps receive, and errors
// that say whether a device token is dead. It imports no SIP library; the
// adapters live in push/apns, push/fcm and push/webhook, and push/pushtest
// has fake APNs and FCM servers for tests.
package push
