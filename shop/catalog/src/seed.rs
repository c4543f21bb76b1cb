//! The demo catalog: 50 products across 10 categories, written once into an empty database.

use flotilla::store::Store;

const CATEGORIES: [(&str, [&str; 5]); 10] = [
    (
        "books",
        [
            "The Rust Programming Language",
            "Designing Data-Intensive Applications",
            "Release It!",
            "Building Microservices",
            "Site Reliability Engineering",
        ],
    ),
    (
        "coffee",
        [
            "Ethiopia Yirgacheffe Beans",
            "Colombia Huila Beans",
            "Espresso House Blend",
            "Decaf Swiss Water",
            "Cold Brew Pack",
        ],
    ),
    (
        "kitchen",
        [
            "Pour-Over Kettle",
            "Burr Grinder",
            "Cast Iron Skillet",
            "Chef's Knife",
            "Digital Scale",
        ],
    ),
    (
        "audio",
        [
            "Studio Headphones",
            "Bluetooth Speaker",
            "USB Microphone",
            "In-Ear Monitors",
            "Headphone Amplifier",
        ],
    ),
    (
        "office",
        [
            "Mechanical Keyboard",
            "Ergonomic Mouse",
            "Standing Desk Mat",
            "Monitor Arm",
            "Desk Lamp",
        ],
    ),
    (
        "outdoor",
        [
            "Trail Running Shoes",
            "Ultralight Tent",
            "Down Sleeping Bag",
            "Trekking Poles",
            "Headlamp",
        ],
    ),
    (
        "games",
        [
            "Strategy Board Game",
            "Cooperative Card Game",
            "Chess Set",
            "Puzzle 1000 Pieces",
            "Dice Tower",
        ],
    ),
    (
        "garden",
        [
            "Pruning Shears",
            "Watering Can",
            "Raised Bed Kit",
            "Herb Seed Set",
            "Compost Bin",
        ],
    ),
    (
        "apparel",
        [
            "Merino T-Shirt",
            "Rain Jacket",
            "Wool Socks",
            "Canvas Tote",
            "Baseball Cap",
        ],
    ),
    (
        "toys",
        [
            "Wooden Train Set",
            "Building Blocks",
            "Plush Crab",
            "Kite",
            "Marble Run",
        ],
    ),
];

/// Inserts the demo products when the table is empty; returns how many were added.
pub(crate) async fn seed_if_empty(store: &Store) -> Result<u64, sqlx::Error> {
    let mut tx = store.pool().begin().await?;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products")
        .fetch_one(&mut *tx)
        .await?;
    if count > 0 {
        return Ok(0);
    }
    let mut added = 0;
    for (c, (category, names)) in CATEGORIES.iter().enumerate() {
        for (i, name) in names.iter().enumerate() {
            let id = (c * names.len() + i + 1) as i64;
            // Prices from 4.99 to 249.99, varied but deterministic.
            let price_minor = 499 + ((id * 7_919) % 245) * 100;
            sqlx::query(
                "INSERT INTO products (id, sku, name, description, category, price_minor, currency, image_url) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(id)
            .bind(format!("{}-{:03}", category[..3].to_uppercase(), id))
            .bind(*name)
            .bind(format!("{name}: a demo product in the {category} category."))
            .bind(*category)
            .bind(price_minor)
            .bind("EUR")
            .bind(format!("https://images.example.com/products/{id}.jpg"))
            .execute(&mut *tx)
            .await?;
            added += 1;
        }
    }
    tx.commit().await?;
    Ok(added)
}
