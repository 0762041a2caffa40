// Mirrors gui-v2 components/Page.qml (a FocusScope with title and background colour).
import QtQuick

FocusScope {
	property string title
	property color backgroundColor: "#111111"
	width: parent ? parent.width : 480
	height: parent ? parent.height : 640

	Rectangle {
		anchors.fill: parent
		color: parent.backgroundColor
		z: -1
	}
}
