// Package push sends push notifications that wake mobile apps: the
// Notifier interface, push targets, the payloads apps receive, and errors
// that say whether a device token is dead, and the Dispatcher that queues
// pushes per provider so that one slow provider holds up no other. It
// imports no SIP library; the adapters live in push/apns, push/fcm and
// push/webhook, and push/pushtest has fake APNs and FCM servers for tests.
// README.md describes what apps receive.
package push
