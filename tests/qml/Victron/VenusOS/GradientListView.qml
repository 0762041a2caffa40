// Mirrors gui-v2 components/GradientListView.qml (a BaseListView, i.e. a ListView, filling its page).
import QtQuick

ListView {
	anchors.fill: parent
	anchors.margins: 8
	spacing: 4
	boundsBehavior: Flickable.StopAtBounds
}
