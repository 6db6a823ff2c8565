//! Where the tables an in-place update changed go in a slot's rows and cells: the old
//! table of each changed ID gives its rows and cells back, then each new table takes the
//! smallest holes that fit ([`ArraySpace`]). Only the slot packets do not read is laid
//! out (the writer's other slot), so a hole a freed table left may be filled at once.

use std::collections::{BTreeMap, BTreeSet};

use palisade_common::{Cell, Row, TableKey, TableValue};

use crate::compile::{Image, TableId};

use super::array_space::ArraySpace;
use super::slot_image::{ArrayBases, ArrayLimits, SlotImage, by_protocol, cell, count, index};

/// How a slot's tables are laid out in its arrays, besides what [`SlotImage`] records.
#[derive(Debug, Clone, Default)]
pub struct SlotTables {
    pub rows: ArraySpace,
    pub cells: ArraySpace,
    /// The `PAL_TABLE` keys of each table ID the slot holds.
    pub keys: BTreeMap<u32, Vec<TableKey>>,
}

impl SlotTables {
    /// The layout of a slot written in full: everything packed from index 0.
    pub fn packed(image: &SlotImage) -> SlotTables {
        let mut keys: BTreeMap<u32, Vec<TableKey>> = BTreeMap::new();
        for key in image.table.keys() {
            keys.entry(key.table_id).or_default().push(*key);
        }
        SlotTables {
            rows: ArraySpace::packed(image.rows.len()),
            cells: ArraySpace::packed(image.cells.len()),
            keys,
        }
    }
}

/// What to write for the changed tables: array entries at slot-relative indexes, and
/// `PAL_TABLE` entries (`None`: delete).
#[derive(Debug, Default)]
pub struct TableWrites {
    pub rows: Vec<(usize, Row)>,
    pub cells: Vec<(usize, Cell)>,
    pub entries: Vec<(TableKey, Option<TableValue>)>,
    /// The layout after the writes.
    pub layout: SlotTables,
}

/// Lays out the tables `changed` (given a new table, or freed) of `image` in `slot`,
/// whose record is `held` and layout `layout` (taken, not copied: it lists every table of
/// the slot). `None` when they do not fit the slot's arrays as they are (holes too small):
/// a full write packs them again.
pub fn lay_out(
    image: &Image,
    slot: u8,
    changed: &BTreeSet<TableId>,
    held: &SlotImage,
    layout: SlotTables,
    bases: ArrayBases,
    limits: ArrayLimits,
) -> Option<TableWrites> {
    let mut out = TableWrites {
        layout,
        ..TableWrites::default()
    };
    // Everything changed gives its space back first: new tables may take any of it.
    for id in changed {
        for key in out.layout.keys.remove(&id.0).unwrap_or_default() {
            if let Some(value) = held.table.get(&key) {
                give_back(&mut out.layout, held, value, bases);
            }
            out.entries.push((key, None));
        }
    }
    for id in changed {
        let Some(Some(table)) = image.tables.get(id.0 as usize) else {
            continue;
        };
        let mut keys = Vec::new();
        for (protocol, ranges) in by_protocol(table) {
            let first_row = out.layout.rows.take(ranges.rows.len());
            for (i, row) in ranges.rows.iter().enumerate() {
                let first_cell = out.layout.cells.take(row.cells.len());
                for (j, &(start, outcome)) in row.cells.iter().enumerate() {
                    out.cells
                        .push((first_cell + j, cell(start, outcome, bases)));
                }
                out.rows.push((
                    first_row + i,
                    Row {
                        start: row.start,
                        _pad: 0,
                        first_cell: index(bases.cells, first_cell),
                        cell_count: count(row.cells.len()),
                    },
                ));
            }
            let key = TableKey {
                slot,
                _pad: 0,
                protocol,
                table_id: id.0,
            };
            let value = TableValue {
                first_row: index(bases.rows, first_row),
                row_count: count(ranges.rows.len()),
            };
            out.entries.push((key, Some(value)));
            keys.push(key);
        }
        out.layout.keys.insert(id.0, keys);
    }
    let fits = out.layout.rows.end() <= limits.rows && out.layout.cells.end() <= limits.cells;
    fits.then_some(out)
}

/// Gives back the rows of one `PAL_TABLE` entry and the cells of those rows.
fn give_back(layout: &mut SlotTables, held: &SlotImage, value: &TableValue, bases: ArrayBases) {
    let first_row = value.first_row.saturating_sub(bases.rows) as usize;
    let row_count = value.row_count as usize;
    for row in held.rows.iter().skip(first_row).take(row_count) {
        let first_cell = row.first_cell.saturating_sub(bases.cells) as usize;
        layout.cells.give_back(first_cell, row.cell_count as usize);
    }
    layout.rows.give_back(first_row, row_count);
}
