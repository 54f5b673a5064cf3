// Package pushtest has fake APNs and FCM servers for tests. They speak the
// real wire protocols over HTTP/2 and TLS on 127.0.0.1, so the production
// clients (sideshow/apns2 in push/apns, the FCM v1 client in push/fcm)
// talk to them unchanged:
//
//   - APNs checks the ES256 provider token (JWT) against a key pair it
//     generated (WriteKey writes it as a .p8 file), or accepts a client
//     certificate it issued (WriteCertificate), and records every push.
//   - FCM runs an OAuth2 token endpoint (JWT-bearer grant, assertions
//     checked against the service-account keys it generated with
//     WriteServiceAccount) and /v1/projects/{id}/messages:send.
//
// Both can be told to answer an error for one device token, for the next
// N requests or for all, optionally with Retry-After, or to hang until
// Release. Their certificates come from a CA (NewCA) whose PEM file is
// the CAFile the clients are given. Every server is closed by t.Cleanup.
//
// A typical setup:
//
//	ca := pushtest.NewCA(t)
//	apple := pushtest.NewAPNs(t, ca)
//	google := pushtest.NewFCM(t, ca)
//	an, _ := apns.New(apns.Options{KeyFile: apple.WriteKey(t), KeyID: apple.KeyID,
//		TeamID: apple.TeamID, URL: apple.URL, SandboxURL: apple.URL, CAFile: ca.WriteFile(t)})
//	fn, _ := fcm.New(fcm.Options{Projects: []fcm.Project{{ProjectID: "p1",
//		CredentialsFile: google.WriteServiceAccount(t, "p1")}},
//		Endpoint: google.Endpoint, CAFile: ca.WriteFile(t)})
//	...
//	reqs := apple.WaitRequests(t, 1, 5*time.Second)
package pushtest
