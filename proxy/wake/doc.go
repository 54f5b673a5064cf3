// Package wake is the chain module that reaches sleeping devices. An
// INVITE from the PBX for a device (or an AOR) is forked at once to every
// device with a live flow; every push-capable device gets one push; the
// transaction is held until a woken device registers again, and the INVITE
// is then delivered to it, exactly once, over its new flow.
package wake
