// Mirrors gui-v2 components/listitems/core/ListSetting.qml with its bases components/listitems/core/ListItem.qml
// and src/abstractlistitem.h: text, caption, showAccessLevel, writeAccessLevel, userHasWriteAccess, interactive,
// clickable, preferredVisible, effectiveVisible. The stand-in draws label, value text and caption.
import QtQuick
import Victron.VenusOS

Rectangle {
	id: root

	property string text
	property string caption
	property int showAccessLevel: VenusOS.User_AccessType_User
	property int writeAccessLevel: VenusOS.User_AccessType_Installer
	readonly property bool userHasWriteAccess: Global.systemSettings.canAccess(writeAccessLevel)
	readonly property bool userHasReadAccess: Global.systemSettings.canAccess(showAccessLevel)
	property bool interactive
	readonly property bool clickable: enabled && interactive && userHasWriteAccess
	property bool preferredVisible: true
	readonly property bool effectiveVisible: preferredVisible && userHasReadAccess
	property string _shownText      // stand-in only: what the item shows on its right

	width: ListView.view ? ListView.view.width : 460
	height: effectiveVisible ? column.implicitHeight + 20 : 0
	visible: effectiveVisible
	radius: 8
	color: "#272622"

	Column {
		id: column
		x: 12
		y: 10
		width: root.width - 24
		spacing: 4
		Item {
			width: parent.width
			height: Math.max(label.implicitHeight, shown.implicitHeight)
			Text {
				id: label
				width: parent.width * 0.55
				text: root.text
				color: "#faf9f5"
				font.pixelSize: 18
				wrapMode: Text.Wrap
			}
			Text {
				id: shown
				anchors.right: parent.right
				width: parent.width * 0.43
				horizontalAlignment: Text.AlignRight
				text: root._shownText
				color: "#969591"
				font.pixelSize: 18
				elide: Text.ElideRight
			}
		}
		Text {
			width: parent.width
			visible: root.caption !== ""
			text: root.caption
			color: "#969591"
			font.pixelSize: 14
			wrapMode: Text.Wrap
		}
	}
}
