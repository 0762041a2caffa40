// Mirrors gui-v2 src/visibleitemmodel.{h,cpp}: an object model over its child items (default property
// sourceModel). gui-v2 leaves out items whose effectiveVisible is false; here such items get zero height.
import QtQuick
import QtQml.Models

ObjectModel {
}
