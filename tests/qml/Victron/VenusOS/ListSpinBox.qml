// Mirrors gui-v2 components/listitems/core/ListSpinBox.qml: dataItem, value, suffix, decimals, from/to (default:
// the item's min/max), stepSize, presets, signal selectorAccepted. gui-v2 opens a NumberSelectorDialog on click; its
// onAccepted (dataItem.setValue(value) when a uid is set) is acceptSelector() here, which the test calls.
import QtQuick
import Victron.VenusOS

ListSetting {
	id: root

	readonly property alias dataItem: dataItem
	property var value: dataItem.valid ? Math.max(from, Math.min(to, dataItem.value)) : 0
	property string suffix
	property int decimals
	property real from: !isNaN(dataItem.min) ? dataItem.min : 0
	property real to: !isNaN(dataItem.max) ? dataItem.max : Global.int32Max / Math.pow(10, decimals)
	property real stepSize: 1
	property var presets: []
	property string fromErrorText
	property string toErrorText
	property string secondaryText: value === undefined ? "--" : Number(value).toFixed(decimals) + root.suffix

	signal selectorAccepted(var newValue)
	signal clicked

	// stand-in for NumberSelectorDialog.onAccepted
	function acceptSelector(newValue) {
		if (!clickable) {
			return false
		}
		if (dataItem.uid.length > 0) {
			dataItem.setValue(newValue)
		} else {
			root.value = newValue
		}
		root.selectorAccepted(newValue)
		return true
	}

	interactive: (dataItem.uid === "" || dataItem.valid)
	_shownText: secondaryText

	VeQuickItem {
		id: dataItem
	}
}
