package apns

import (
	"encoding/json"

	"github.com/sipwake/sipwake/push"
)

// Payload size limits of APNs, in bytes.
const (
	maxPayload     = 4096
	maxVoIPPayload = 5120
)

// body is the JSON an app receives: Apple's "aps" dictionary beside the
// flat "sipwake" object.
type body struct {
	APS     aps               `json:"aps"`
	Sipwake map[string]string `json:"sipwake"`
}

type aps struct {
	Alert            *alert `json:"alert,omitempty"`
	ContentAvailable int    `json:"content-available,omitempty"`
	MutableContent   int    `json:"mutable-content,omitempty"`
}

type alert struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body,omitempty"`
}

// encode builds the JSON payload of n: an empty aps for VoIP pushes
// (PushKit hands the whole dictionary to the app), alert with
// mutable-content for alert pushes, content-available for background
// ones.
func encode(n *push.Notification) ([]byte, error) {
	b := body{Sipwake: n.Payload.Fields()}
	switch n.Type {
	case push.TypeAlert:
		a := n.Alert
		if a == nil {
			d := DefaultAlert(n.Payload)
			a = &d
		}
		b.APS.Alert = &alert{Title: a.Title, Body: a.Body}
		b.APS.MutableContent = 1
	case push.TypeBackground:
		b.APS.ContentAvailable = 1
	}
	return json.Marshal(b)
}

// DefaultAlert is the text of an alert push whose Notification has no
// Alert: the caller as title, a short English phrase for the event as
// body. The app's notification service extension (mutable-content) can
// replace it from the "sipwake" fields.
func DefaultAlert(p push.Payload) push.Alert {
	title := p.FromName
	if title == "" {
		title = p.FromURI
	}
	var text string
	switch p.Event {
	case push.EventCall:
		text = "Incoming call"
	case push.EventCallMissed:
		text = "Missed call"
	case push.EventCallCancelled:
		text = "Call cancelled"
	case push.EventCallAnsweredElsewhere:
		text = "Call answered on another device"
	case push.EventMessage:
		text = p.Body
		if text == "" {
			text = "New message"
		}
	default:
		text = "Open the app to stay reachable"
	}
	return push.Alert{Title: title, Body: text}
}
