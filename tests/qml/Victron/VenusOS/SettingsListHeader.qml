// Mirrors gui-v2 components/listitems/core/SettingsListHeader.qml (a Label with preferredVisible, effectiveVisible).
import QtQuick

Text {
	property bool preferredVisible: true
	readonly property bool effectiveVisible: preferredVisible
	width: ListView.view ? ListView.view.width : 460
	height: effectiveVisible ? implicitHeight : 0
	visible: effectiveVisible
	topPadding: 14
	bottomPadding: 4
	leftPadding: 12
	color: "#969591"
	font.pixelSize: 16
}
