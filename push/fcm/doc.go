// Package fcm sends pushes to Android devices through the Firebase Cloud
// Messaging HTTP v1 API.
//
// It speaks FCM v1 directly over net/http, with golang.org/x/oauth2 for
// the service account's access tokens, instead of using
// github.com/appleboy/go-fcm as ARCHITECTURE.md planned: that module
// cannot be downloaded from the module proxy this project builds with,
// and the part of it we need is one JSON POST. Doing it ourselves also
// lets push.ca_file reach the OAuth2 token endpoint, and lets a refusal
// be classified from FCM's own error details.
//
// Each configured project has a service-account credentials file. The
// signed JWT-bearer assertion is exchanged at the file's token_uri for an
// access token, which oauth2's ReuseTokenSource caches and reuses until
// shortly before it expires (an hour at Google). A target's pn-param
// names its project. Messages are data-only (no notification block) with
// android.priority HIGH; the app builds its own notification or call UI.
package fcm
